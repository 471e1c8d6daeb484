//go:build linux

package archive

import (
	"io/fs"
	"syscall"
)

type inodeKey struct{ dev, ino uint64 }

func inodeOf(info fs.FileInfo) (inodeKey, uint64, bool) {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return inodeKey{}, 0, false
	}
	return inodeKey{uint64(st.Dev), st.Ino}, uint64(st.Nlink), true
}
