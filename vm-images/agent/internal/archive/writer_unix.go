//go:build linux

package archive

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// fdWriter makes entries relative to directory descriptors it opened itself, one component at a
// time with O_NOFOLLOW: a symlink anywhere on the way is an error (ELOOP or ENOTDIR), never
// followed.
type fdWriter struct {
	root int
}

func newWriter(dir string) (writer, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return &fdWriter{root: fd}, nil
}

func (w *fdWriter) close() error { return unix.Close(w.root) }

// parent opens the directory that holds comps' last component (the caller closes it).
func (w *fdWriter) parent(comps []string, create bool) (int, error) {
	fd, err := unix.Dup(w.root)
	if err != nil {
		return -1, err
	}
	for _, c := range comps[:len(comps)-1] {
		next, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if errors.Is(err, unix.ENOENT) && create {
			if err = unix.Mkdirat(fd, c, 0o755); err == nil || errors.Is(err, unix.EEXIST) {
				next, err = unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
			}
		}
		unix.Close(fd)
		if err != nil {
			return -1, &os.PathError{Op: "openat", Path: c, Err: err}
		}
		fd = next
	}
	return fd, nil
}

func (w *fdWriter) mkdir(comps []string, perm os.FileMode) error {
	fd, err := w.parent(comps, true)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	name := comps[len(comps)-1]
	err = unix.Mkdirat(fd, name, uint32(perm&0o777))
	if errors.Is(err, unix.EEXIST) {
		// A directory made for an entry below it before its own entry came: its mode now.
		var st unix.Stat_t
		if err = unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err == nil {
			if st.Mode&unix.S_IFMT != unix.S_IFDIR {
				return &os.PathError{Op: "mkdirat", Path: name, Err: unix.EEXIST}
			}
			err = unix.Fchmodat(fd, name, uint32(perm&0o777&^0o022), 0)
		}
	}
	return err
}

func (w *fdWriter) file(comps []string, perm os.FileMode, content io.Reader) (int64, error) {
	fd, err := w.parent(comps, true)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ffd, err := unix.Openat(fd, comps[len(comps)-1], unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(perm&0o777))
	if err != nil {
		return 0, &os.PathError{Op: "openat", Path: comps[len(comps)-1], Err: err}
	}
	f := os.NewFile(uintptr(ffd), comps[len(comps)-1])
	n, err := io.Copy(f, content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

func (w *fdWriter) symlink(comps []string, target string) (bool, error) {
	fd, err := w.parent(comps, true)
	if err != nil {
		return false, err
	}
	defer unix.Close(fd)
	return true, unix.Symlinkat(target, fd, comps[len(comps)-1])
}

func (w *fdWriter) link(comps, target []string) error {
	from, err := w.parent(target, false)
	if err != nil {
		return err
	}
	defer unix.Close(from)
	var st unix.Stat_t
	if err := unix.Fstatat(from, target[len(target)-1], &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return &os.PathError{Op: "linkat", Path: target[len(target)-1], Err: unix.EPERM}
	}
	to, err := w.parent(comps, true)
	if err != nil {
		return err
	}
	defer unix.Close(to)
	// Flags 0: a symlink is linked as itself, never followed.
	return unix.Linkat(from, target[len(target)-1], to, comps[len(comps)-1], 0)
}
