package agent

import (
	"os"
	"strconv"
	"strings"
)

// Account is a line of /etc/passwd. The agent reads the files itself (as getent and id would on
// an image without NSS modules) instead of forking for each look-up.
type Account struct {
	Name     string
	UID, GID int
	Home     string
}

func (a *Agent) readLines(path string) []string {
	data, err := os.ReadFile(a.path(path))
	if err != nil {
		return nil
	}
	return strings.Split(string(data), "\n")
}

// lookupUser is name's passwd entry.
func (a *Agent) lookupUser(name string) (*Account, bool) {
	for _, line := range a.readLines("/etc/passwd") {
		f := strings.Split(line, ":")
		if len(f) < 7 || f[0] != name {
			continue
		}
		uid, err1 := strconv.Atoi(f[2])
		gid, err2 := strconv.Atoi(f[3])
		if err1 != nil || err2 != nil {
			continue
		}
		return &Account{Name: name, UID: uid, GID: gid, Home: f[5]}, true
	}
	return nil, false
}

// groupsOf is every group name is in, its primary group first (setpriv --init-groups).
func (a *Agent) groupsOf(name string, gid int) []int {
	groups := []int{gid}
	for _, line := range a.readLines("/etc/group") {
		f := strings.Split(line, ":")
		if len(f) < 4 {
			continue
		}
		for _, member := range strings.Split(f[3], ",") {
			if member == name {
				if g, err := strconv.Atoi(f[2]); err == nil && g != gid {
					groups = append(groups, g)
				}
			}
		}
	}
	return groups
}

// shadowPassword is name's password field in /etc/shadow.
func (a *Agent) shadowPassword(name string) (string, bool) {
	for _, line := range a.readLines("/etc/shadow") {
		f := strings.Split(line, ":")
		if len(f) >= 2 && f[0] == name {
			return f[1], true
		}
	}
	return "", false
}

func (a *Agent) identity(acc *Account) *Identity {
	return &Identity{Name: acc.Name, UID: acc.UID, GID: acc.GID, Groups: a.groupsOf(acc.Name, acc.GID), Home: acc.Home}
}
