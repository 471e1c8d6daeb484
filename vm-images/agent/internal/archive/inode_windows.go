//go:build windows

package archive

import "io/fs"

type inodeKey struct{ dev, ino uint64 }

// Windows gives no link count through FileInfo: the hardlink check after unpacking is Linux's.
func inodeOf(fs.FileInfo) (inodeKey, uint64, bool) { return inodeKey{}, 0, false }
