//go:build linux

package agent

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// LinuxHost is the machine the agent runs on.
type LinuxHost struct{}

// env is the agent's environment with c's additions (a key given again replaces the old value).
func env(base []string, add []string) []string {
	out := make([]string, 0, len(base)+len(add))
	keys := map[string]bool{}
	for _, kv := range add {
		k, _, _ := strings.Cut(kv, "=")
		keys[k] = true
	}
	for _, kv := range base {
		if k, _, _ := strings.Cut(kv, "="); !keys[k] {
			out = append(out, kv)
		}
	}
	return append(out, add...)
}

// Run starts the command in a process group of its own (as timeout(1) does), so that the
// timeout ends the whole tree: SIGTERM, then SIGKILL 10 s later.
func (LinuxHost) Run(ctx context.Context, c Command) (int, error) {
	cmd := exec.Command(c.Name, c.Args...)
	cmd.Dir = c.Dir
	add := c.Env
	attr := &syscall.SysProcAttr{Setpgid: true}
	if c.As != nil {
		add = append(append([]string{}, add...), "HOME="+c.As.Home, "USER="+c.As.Name, "LOGNAME="+c.As.Name)
		groups := make([]uint32, 0, len(c.As.Groups))
		for _, g := range c.As.Groups {
			groups = append(groups, uint32(g))
		}
		attr.Credential = &syscall.Credential{Uid: uint32(c.As.UID), Gid: uint32(c.As.GID), Groups: groups}
	}
	cmd.SysProcAttr = attr
	cmd.Env = env(os.Environ(), add)
	if c.Stdin != nil {
		cmd.Stdin = bytes.NewReader(c.Stdin)
	}
	if c.Output != nil {
		cmd.Stdout, cmd.Stderr = c.Output, c.Output
		// A daemon the command leaves behind may hold a pipe open: stop waiting for it.
		cmd.WaitDelay = 5 * time.Second
	}
	if err := cmd.Start(); err != nil {
		return -1, err
	}
	done := make(chan struct{})
	var timedOutBy atomic.Int32 // the signal the timeout sent
	if c.Timeout > 0 {
		go func() {
			select {
			case <-done:
				return
			case <-time.After(c.Timeout):
			}
			timedOutBy.Store(int32(syscall.SIGTERM))
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				timedOutBy.Store(int32(syscall.SIGKILL))
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			}
		}()
	}
	go func() {
		select {
		case <-done:
		case <-ctx.Done():
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		}
	}()
	err := cmd.Wait()
	close(done)
	switch syscall.Signal(timedOutBy.Load()) {
	case syscall.SIGTERM:
		return timedOut, nil
	case syscall.SIGKILL:
		return 128 + int(syscall.SIGKILL), nil
	}
	if cmd.ProcessState == nil {
		return -1, err
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal()), nil
	}
	return cmd.ProcessState.ExitCode(), nil
}

func (LinuxHost) Has(program string) bool {
	_, err := exec.LookPath(program)
	return err == nil
}

func (LinuxHost) Hostname() string {
	name, _ := os.Hostname()
	return name
}

func (LinuxHost) SetHostname(name string) error {
	if err := syscall.Sethostname([]byte(name)); err != nil {
		return os.WriteFile("/proc/sys/kernel/hostname", []byte(name+"\n"), 0o644)
	}
	return nil
}

func (LinuxHost) SetClock(t time.Time) error {
	tv := syscall.NsecToTimeval(t.UnixNano())
	return syscall.Settimeofday(&tv)
}

func (LinuxHost) Chown(path string, uid, gid int) error { return os.Lchown(path, uid, gid) }

// ChownTree is chown -R -h done with directory descriptors: each directory is opened with
// O_NOFOLLOW relative to its parent, so a symlink put in the tree meanwhile is given away itself,
// never what it points to.
func (LinuxHost) ChownTree(dir string, uid, gid int) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return os.Lchown(dir, uid, gid)
	}
	defer unix.Close(fd)
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return err
	}
	return chownAt(fd, uid, gid)
}

func chownAt(fd, uid, gid int) error {
	dup, err := unix.Dup(fd)
	if err != nil {
		return err
	}
	d := os.NewFile(uintptr(dup), "dir")
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return err
	}
	var first error
	for _, name := range names {
		if err := unix.Fchownat(fd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil && first == nil {
			first = err
		}
		sub, err := unix.Openat(fd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			continue // not a directory (or a symlink to one)
		}
		if err := chownAt(sub, uid, gid); err != nil && first == nil {
			first = err
		}
		unix.Close(sub)
	}
	return first
}

// Mount mounts a NoCloud disk read-only: ISO 9660 (KubeVirt's) or FAT, else as mount(8) finds.
func (h LinuxHost) Mount(device, dir string) error {
	for _, fs := range []string{"iso9660", "vfat"} {
		if err := syscall.Mount(device, dir, fs, syscall.MS_RDONLY, ""); err == nil {
			return nil
		}
	}
	status, err := h.Run(context.Background(), Command{Name: "mount", Args: []string{"-o", "ro", device, dir}})
	if err == nil && status != 0 {
		err = errors.New("mount failed")
	}
	return err
}

func (LinuxHost) Unmount(dir string) error { return syscall.Unmount(dir, 0) }

func (LinuxHost) Addresses(iface string) ([]net.IP, error) { return interfaceAddresses(iface) }
