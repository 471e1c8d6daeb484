package archive

import (
	"archive/tar"
	"archive/zip"
	"compress/bzip2"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ulikunitz/xz"
)

// errOverCap stops a stream once it has given more than its cap.
var errOverCap = errors.New("more bytes than the cap")

// capped counts what passes through it and fails once more than max has.
type capped struct {
	r     io.Reader
	n     int64
	max   int64
	ended error // the underlying reader's error, when it failed
}

func (c *capped) Read(p []byte) (int, error) {
	if c.n > c.max {
		return 0, errOverCap
	}
	if room := c.max + 1 - c.n; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && err != io.EOF {
		c.ended = err
	}
	if c.n > c.max && err == nil {
		err = errOverCap
	}
	return n, err
}

// decompressed is the tar stream of an archive file of kind.
func decompressed(f io.Reader, kind Kind) (io.Reader, error) {
	switch kind {
	case TarGz:
		return gzip.NewReader(f)
	case TarBz2:
		return bzip2.NewReader(f), nil
	case TarXz:
		return xz.NewReader(f)
	case Tar:
		return f, nil
	}
	return nil, fmt.Errorf("not a tar kind: %s", kind)
}

// tarRecord is the listing record of a tar header; false for headers that are no entry (a pax
// global header).
func tarRecord(h *tar.Header) (Record, bool) {
	r := Record{Name: h.Name, Target: h.Linkname}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		r.Type, r.Size = 'f', h.Size
	case tar.TypeDir:
		r.Type = 'd'
	case tar.TypeSymlink:
		r.Type = 'l'
	case tar.TypeLink:
		r.Type = 'h'
	case tar.TypeChar:
		r.Type = 'c'
	case tar.TypeBlock:
		r.Type = 'b'
	case tar.TypeFifo:
		r.Type = 'p'
	case tar.TypeXGlobalHeader:
		return r, false
	default:
		r.Type = h.Typeflag
	}
	return r, true
}

// Zip "made by" hosts whose external attributes hold a Unix mode.
const (
	zipUnix = 3
	zipOSX  = 19
)

// zipRecord is the listing record of a zip entry (the target of a symlink is read later).
func zipRecord(f *zip.File) Record {
	r := Record{Name: f.Name, Type: 'f', Size: int64(f.UncompressedSize64)}
	dirName := strings.HasSuffix(strings.ReplaceAll(f.Name, `\`, "/"), "/")
	host := f.CreatorVersion >> 8
	if host == zipUnix || host == zipOSX {
		switch (f.ExternalAttrs >> 16) & 0xF000 {
		case 0, 0x8000:
			// No type bits at all (Python's zipfile.writestr makes these): a regular file.
			if dirName {
				r.Type = 'd'
			}
		case 0x4000:
			r.Type = 'd'
		case 0xA000:
			r.Type = 'l'
		case 0x2000:
			r.Type = 'c'
		case 0x6000:
			r.Type = 'b'
		case 0x1000:
			r.Type = 'p'
		case 0xC000:
			r.Type = 's'
		default:
			r.Type = '?'
		}
	} else if dirName || f.ExternalAttrs&0x10 != 0 {
		r.Type = 'd'
	}
	if r.Type != 'f' {
		r.Size = 0
	}
	return r
}

// zipPerm is the permission bits of a zip entry (no setuid, setgid or sticky bits).
func zipPerm(f *zip.File, dir bool) os.FileMode {
	host := f.CreatorVersion >> 8
	if host == zipUnix || host == zipOSX {
		if perm := os.FileMode(f.ExternalAttrs>>16) & 0o777; perm != 0 {
			return perm
		}
	}
	if dir {
		return 0o755
	}
	return 0o644
}

// readLink is a zip symlink's target: its content (at most 4096 bytes); "" when unreadable.
func readLink(f *zip.File) string {
	rc, err := f.Open()
	if err != nil {
		return ""
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, 4096))
	if err != nil {
		return ""
	}
	return string(b)
}

// Check refuses an archive that breaks a rule before anything is unpacked: its real
// uncompressed size (read as a stream that stops at the cap, so a bomb costs CPU up to the cap and
// no disk), the number of entries, whether it can be listed, and then each entry (CheckRecords).
// It returns the byte cap that applies to this archive; a rule it broke is a *Refusal.
func Check(path string, kind Kind, lim Limits) (int64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	limit := lim.Cap(st.Size())
	var bytes int64
	var records []Record
	var listErr error
	if kind == Zip {
		bytes, records, listErr = listZip(path, limit, lim.MaxEntries)
	} else {
		bytes, records, listErr = listTar(path, kind, limit, lim.MaxEntries)
		if kind == Tar {
			bytes = st.Size()
		}
	}
	if bytes > limit {
		return limit, refuse("size", "it unpacks to more than %d bytes (the smaller of CODEBROWSE_ARCHIVE_MAX_BYTES=%d and %dx its %d bytes)",
			limit, lim.MaxBytes, lim.MaxRatio, st.Size())
	}
	if len(records) > lim.MaxEntries {
		return limit, refuse("entry-count", "it has more than %d entries (CODEBROWSE_ARCHIVE_MAX_ENTRIES)", lim.MaxEntries)
	}
	// The entries read before a listing broke off still name the rule they break.
	if r := CheckRecords(records, limit, kind == Zip); r != nil {
		return limit, r
	}
	if listErr != nil {
		return limit, refuse("unreadable", "listing it failed: %v", listErr)
	}
	return limit, nil
}

// listTar reads the whole stream once: its uncompressed bytes (up to limit+1) and its records
// (up to maxEntries+1), and the error that ended the listing early.
func listTar(path string, kind Kind, limit int64, maxEntries int) (int64, []Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, nil, err
	}
	defer f.Close()
	stream, err := decompressed(f, kind)
	if err != nil {
		return 0, nil, err
	}
	c := &capped{r: stream, max: limit}
	tr := tar.NewReader(c)
	var records []Record
	var listErr error
	for len(records) <= maxEntries {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			listErr = err
			break
		}
		if r, ok := tarRecord(h); ok {
			records = append(records, r)
		}
	}
	// The size counts the whole stream, as gzip -dc | head -c does, whatever tar made of it.
	_, _ = io.Copy(io.Discard, c)
	if listErr == errOverCap || errors.Is(listErr, errOverCap) {
		listErr = nil // the size rule names it
	}
	return c.n, records, listErr
}

// listZip: the bytes of every entry's content (as unzip -p gives them, up to limit+1), the
// records (symlink targets read), and the error when the zip cannot be listed.
func listZip(path string, limit int64, maxEntries int) (int64, []Record, error) {
	zr, err := zip.OpenReader(path)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return 0, nil, err
	}
	defer zr.Close()
	var total int64
	for _, f := range zr.File {
		if total > limit {
			break
		}
		rc, err := f.Open()
		if err != nil {
			continue
		}
		n, _ := io.Copy(io.Discard, io.LimitReader(rc, limit+1-total))
		rc.Close()
		total += n
	}
	var records []Record
	for _, f := range zr.File {
		if len(records) > maxEntries {
			break
		}
		r := zipRecord(f)
		if r.Type == 'l' {
			r.Target = readLink(f)
		}
		records = append(records, r)
	}
	return total, records, nil
}
