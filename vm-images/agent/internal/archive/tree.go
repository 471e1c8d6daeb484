package archive

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// CheckTree checks an unpacked tree again, as the shell agent's check_unpacked did (defence in
// depth: what the listing rules would have refused, found on disk): no special file, no symlink
// that resolves outside dir, no file that shares its inode with one outside, and no more bytes
// than limit. The bytes are those of the files' content, not the blocks du counts (a few small
// files took 4 KiB each there and were refused).
func CheckTree(dir string, limit int64) error {
	canon, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	canon, err = filepath.Abs(canon)
	if err != nil {
		return err
	}
	var special, escape, escapeTarget string
	var total int64
	inodes := map[inodeKey]int{}
	links := map[inodeKey]uint64{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch mode := info.Mode(); {
		case mode.IsDir():
		case mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			if escape == "" && !inside(realPath(filepath.Join(filepath.Dir(p), target), canon, dir), canon) {
				escape, escapeTarget = p, target
			}
		case mode.IsRegular():
			total += info.Size()
			if key, n, ok := inodeOf(info); ok && n > 1 {
				inodes[key]++
				links[key] = n
			}
		default:
			if special == "" {
				special = p
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if special != "" {
		return refuse("special-file", "unpacking made the special file %s", special)
	}
	if escape != "" {
		return refuse("link-escape", "after unpacking, %s -> %s points outside %s", escape, escapeTarget, dir)
	}
	for key, n := range inodes {
		if uint64(n) < links[key] {
			return refuse("hardlink-escape", "after unpacking, inode %d is linked from outside %s", key.ino, dir)
		}
	}
	if total > limit {
		return refuse("size", "unpacked it takes %d bytes, more than %d", total, limit)
	}
	return nil
}

func inside(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator))
}

// realPath resolves p as realpath -m does: every symlink on the way followed (up to 40), what
// does not exist taken as it is written. dir and canon name the same directory (a path given
// under dir is read as under canon).
func realPath(p, canon, dir string) string {
	if abs, err := filepath.Abs(p); err == nil {
		p = abs
	}
	if absDir, err := filepath.Abs(dir); err == nil && inside(p, absDir) {
		p = canon + strings.TrimPrefix(p, absDir)
	}
	var done string
	rest := strings.Split(filepath.ToSlash(p), "/")
	vol := filepath.VolumeName(p)
	if vol != "" {
		rest = strings.Split(filepath.ToSlash(strings.TrimPrefix(p, vol)), "/")
	}
	hops := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			done = filepath.Dir(vol + string(filepath.Separator) + strings.TrimPrefix(done, vol+string(filepath.Separator)))
			if done == vol+string(filepath.Separator) {
				done = ""
			}
			continue
		}
		next := filepath.Join(vol+string(filepath.Separator), done, c)
		st, err := os.Lstat(next)
		if err == nil && st.Mode()&fs.ModeSymlink != 0 && hops < 40 {
			hops++
			target, err := os.Readlink(next)
			if err == nil {
				if filepath.IsAbs(target) {
					done = ""
				}
				rest = append(strings.Split(filepath.ToSlash(target), "/"), rest...)
				continue
			}
		}
		done = strings.TrimPrefix(next, vol+string(filepath.Separator))
	}
	return filepath.Join(vol+string(filepath.Separator), done)
}
