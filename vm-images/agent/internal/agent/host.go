package agent

import (
	"context"
	"io"
	"net"
	"time"
)

// Host is what the agent does to the machine beyond writing files: commands (useradd, ip, dpkg,
// the packages' build steps) and privileged system calls. The real one is the machine's (host_*.go);
// the agent's own end-to-end test plays one, so that it runs without root on a temporary tree.
type Host interface {
	// Run runs a command to its end and returns its exit status (a signal's 128+n); an error when
	// it could not be started.
	Run(ctx context.Context, c Command) (int, error)
	// Has says whether program is on PATH (command -v).
	Has(program string) bool
	Hostname() string
	SetHostname(name string) error
	SetClock(t time.Time) error
	// Chown gives path (not what a symlink points to) to uid:gid; ChownTree a whole tree (chown -R -h).
	Chown(path string, uid, gid int) error
	ChownTree(dir string, uid, gid int) error
	// Addresses are the addresses on a network interface.
	Addresses(iface string) ([]net.IP, error)
	// Mount mounts a NoCloud disk read-only at dir; Unmount undoes it.
	Mount(device, dir string) error
	Unmount(dir string) error
}

// Command is one program the agent runs.
type Command struct {
	Name   string
	Args   []string
	Dir    string
	Env    []string  // KEY=value added to (or replacing in) the agent's environment
	Stdin  []byte    // nil: /dev/null
	Output io.Writer // stdout and stderr; nil: discarded
	As     *Identity // nil: as the agent (root)
	// Timeout ends the command (its whole process group: SIGTERM, SIGKILL 10 s later) with
	// status TimedOut; 0: none.
	Timeout time.Duration
}

// Identity is a user a command runs as (setpriv --reuid --regid --init-groups).
type Identity struct {
	Name     string
	UID, GID int
	Groups   []int
	Home     string
}
