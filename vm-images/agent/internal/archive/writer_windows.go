//go:build windows

package archive

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// pathWriter makes entries by path under a directory it made itself. Windows has no openat: each
// component on the way is checked with Lstat to be a real directory (never a reparse point)
// before anything is made below it, and no symlinks are made at all (they need a privilege, and
// Expand-Archive makes none either).
type pathWriter struct {
	root string
}

func newWriter(dir string) (writer, error) {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	return &pathWriter{root: dir}, nil
}

func (w *pathWriter) close() error { return nil }

func (w *pathWriter) parent(comps []string, create bool) (string, error) {
	p := w.root
	for _, c := range comps[:len(comps)-1] {
		p = filepath.Join(p, c)
		st, err := os.Lstat(p)
		if os.IsNotExist(err) && create {
			if err = os.Mkdir(p, 0o755); err == nil {
				st, err = os.Lstat(p)
			}
		}
		if err != nil {
			return "", err
		}
		if !st.Mode().IsDir() || st.Mode()&os.ModeSymlink != 0 {
			return "", fmt.Errorf("%s is not a directory", p)
		}
	}
	return p, nil
}

func (w *pathWriter) mkdir(comps []string, perm os.FileMode) error {
	dir, err := w.parent(comps, true)
	if err != nil {
		return err
	}
	p := filepath.Join(dir, comps[len(comps)-1])
	if err := os.Mkdir(p, perm); err != nil {
		if st, lerr := os.Lstat(p); lerr == nil && st.Mode().IsDir() {
			return nil
		}
		return err
	}
	return nil
}

func (w *pathWriter) file(comps []string, perm os.FileMode, content io.Reader) (int64, error) {
	dir, err := w.parent(comps, true)
	if err != nil {
		return 0, err
	}
	f, err := os.OpenFile(filepath.Join(dir, comps[len(comps)-1]), os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, content)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return n, err
}

func (w *pathWriter) symlink(comps []string, target string) (bool, error) {
	_, err := w.parent(comps, true)
	return false, err
}

func (w *pathWriter) link(comps, target []string) error {
	from, err := w.parent(target, false)
	if err != nil {
		return err
	}
	to, err := w.parent(comps, true)
	if err != nil {
		return err
	}
	src := filepath.Join(from, target[len(target)-1])
	if st, err := os.Lstat(src); err != nil || !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a file", src)
	}
	return os.Link(src, filepath.Join(to, comps[len(comps)-1]))
}
