package archive

import (
	"archive/tar"
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Unpacking runs in the agent, as root, into a fresh directory: every path component is
// created by the unpacker itself and walked with O_NOFOLLOW relative to the directory it opened
// (openat), so no symlink is ever followed while writing, and only regular files, directories,
// symlinks whose targets stay inside and hardlinks to files it wrote are made: no devices, fifos
// or sockets, no setuid, setgid or sticky bits, no owners or times from the archive. That is why
// the shell agent's unprivileged unpack user (CODEBROWSE_UNPACK_USER) and its scan of the whole
// file system for writes outside ("outside-write") are not needed here: the files are root's
// until the agent gives the tree to the session user (ChownTree).
//
// Unpack makes dir (which must not exist) and unpacks the archive into it. It enforces the rules
// again as it goes (Check has already passed the listing): a broken rule is a *Refusal. Notes
// say what was left out (symlinks on Windows).
func Unpack(path string, kind Kind, limit int64, dir string) (notes []string, err error) {
	w, err := newWriter(dir)
	if err != nil {
		return nil, err
	}
	u := &unpacker{w: w, limit: limit, kinds: map[string]byte{}, links: map[string]bool{}, isZip: kind == Zip}
	defer func() {
		if cerr := w.close(); err == nil {
			err = cerr
		}
	}()
	if kind == Zip {
		err = u.unzip(path)
	} else {
		err = u.untar(path, kind)
	}
	return u.notes, err
}

type unpacker struct {
	w     writer
	limit int64
	total int64
	kinds map[string]byte // what the unpacker made at each name: 'f', 'd', 'l'
	links map[string]bool
	isZip bool
	notes []string
}

// writer makes entries under the unpack directory; comps never hold "" "." or "..", and every
// parent was made by the same writer.
type writer interface {
	mkdir(comps []string, perm os.FileMode) error
	file(comps []string, perm os.FileMode, content io.Reader) (int64, error)
	symlink(comps []string, target string) (made bool, err error)
	link(comps, target []string) error
	close() error
}

func (u *unpacker) untar(path string, kind Kind) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	stream, err := decompressed(f, kind)
	if err != nil {
		return err
	}
	tr := tar.NewReader(stream)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return refuse("unreadable", "reading it failed after %d entries: %v", len(u.kinds), err)
		}
		r, ok := tarRecord(h)
		if !ok {
			continue
		}
		if err := u.entry(r, os.FileMode(h.Mode)&0o777, tr); err != nil {
			return err
		}
	}
}

func (u *unpacker) unzip(path string) error {
	zr, err := zip.OpenReader(path)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return refuse("unreadable", "reading it failed: %v", err)
	}
	defer zr.Close()
	for _, f := range zr.File {
		r := zipRecord(f)
		switch r.Type {
		case 'l':
			r.Target = readLink(f)
		case 'f':
			rc, err := f.Open()
			if err != nil {
				return refuse("unreadable", "entry \"%s\" cannot be read: %v", Shown(f.Name), err)
			}
			err = u.entry(r, zipPerm(f, false), rc)
			rc.Close()
			if err != nil {
				return err
			}
			continue
		}
		if err := u.entry(r, zipPerm(f, r.Type == 'd'), nil); err != nil {
			return err
		}
	}
	return nil
}

// entry makes one entry, after the per-entry rules.
func (u *unpacker) entry(r Record, perm os.FileMode, content io.Reader) error {
	comps := components(r.Name, u.isZip)
	shown := `"` + Shown(r.Name) + `"`
	switch {
	case absolute(r.Name, u.isZip):
		return refuse("absolute-path", "entry %s has an absolute path", shown)
	case hasParent(comps):
		return refuse("parent-dir", "entry %s has a .. component", shown)
	case tooLong(comps):
		return refuse("name-too-long", "entry %s has a name longer than a file system takes", shown)
	}
	for k := 1; k < len(comps); k++ {
		p := strings.Join(comps[:k], "/")
		switch u.kinds[p] {
		case 0, 'd':
		case 'l':
			return refuse("through-symlink", "entry %s goes through the symlink \"%s\" of the same archive", shown, Shown(p))
		default:
			return refuse("not-a-directory", "entry %s is under \"%s\", which the archive makes a file", shown, Shown(p))
		}
	}
	name := strings.Join(comps, "/")
	if had := u.kinds[name]; name == "" && r.Type != 'd' || had != 0 && (had != 'd' || r.Type != 'd') {
		return refuse("duplicate-entry", "entry %s is in the archive twice (or under a name it has used)", shown)
	}
	if name == "" {
		return nil // the unpack directory itself
	}
	mark := func(kind byte) {
		for k := 1; k < len(comps); k++ {
			if p := strings.Join(comps[:k], "/"); u.kinds[p] == 0 {
				u.kinds[p] = 'd'
			}
		}
		u.kinds[name] = kind
	}
	switch r.Type {
	case 'd':
		if err := u.w.mkdir(comps, perm|0o700); err != nil {
			return fmt.Errorf("making %s: %w", shown, err)
		}
		mark('d')
	case 'f':
		if u.total+r.Size > u.limit {
			return refuse("size", "it unpacks to more than %d bytes", u.limit)
		}
		n, err := u.w.file(comps, perm, io.LimitReader(content, r.Size))
		u.total += n
		if err != nil {
			return fmt.Errorf("writing %s: %w", shown, err)
		}
		mark('f')
	case 'l':
		target := components(r.Target, u.isZip)
		if r.Target == "" || strings.HasPrefix(r.Target, "/") || u.isZip && strings.HasPrefix(r.Target, `\`) {
			return refuse("absolute-link", "symlink %s points to the absolute path \"%s\"", shown, Shown(r.Target))
		}
		switch resolve(comps, target, u.links) {
		case "!", "~":
			return refuse("link-escape", "symlink %s -> \"%s\" points outside the unpack directory", shown, Shown(r.Target))
		}
		// A zip's backslashes are separators: the link gets the target unzip would give it.
		made, err := u.w.symlink(comps, strings.Join(target, "/"))
		if err != nil {
			return fmt.Errorf("making the symlink %s: %w", shown, err)
		}
		if !made {
			u.notes = append(u.notes, fmt.Sprintf("the symlink %s -> \"%s\" was left out (no symlinks here)", shown, Shown(r.Target)))
		}
		u.links[name] = true
		mark('l')
	case 'h':
		target := components(r.Target, u.isZip)
		if absolute(r.Target, u.isZip) || hasParent(target) || u.kinds[strings.Join(target, "/")] != 'f' {
			return refuse("hardlink-escape", "hardlink %s -> \"%s\" is not a file of the same archive", shown, Shown(r.Target))
		}
		for k := 1; k < len(target); k++ {
			if u.kinds[strings.Join(target[:k], "/")] != 'd' {
				return refuse("hardlink-escape", "hardlink %s -> \"%s\" is not a file of the same archive", shown, Shown(r.Target))
			}
		}
		if err := u.w.link(comps, target); err != nil {
			return fmt.Errorf("making the hardlink %s: %w", shown, err)
		}
		mark('f')
	default:
		return refuse("special-file", "entry %s is a device, fifo or socket (type %c)", shown, r.Type)
	}
	return nil
}
