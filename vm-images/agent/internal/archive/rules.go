package archive

import (
	"fmt"
	"strings"
)

// Record is one entry of an archive's listing.
type Record struct {
	// Type: 'f' file, 'd' directory, 'l' symlink, 'h' hardlink, or another letter for anything
	// else (c, b, p as tar -tv shows devices and fifos; the typeflag of other tar entries).
	Type   byte
	Size   int64  // bytes of a file's content (0 for the other types)
	Name   string // as the archive has it
	Target string // a link's target, as the archive has it
}

// Refusal is a rule an archive broke.
type Refusal struct {
	Rule   string
	Detail string
}

func (r *Refusal) Error() string { return "refused by the archive rule " + r.Rule + ": " + r.Detail }

func refuse(rule, format string, args ...any) *Refusal {
	return &Refusal{Rule: rule, Detail: fmt.Sprintf(format, args...)}
}

// Limits of what an archive may unpack to.
type Limits struct {
	MaxEntries int   // CODEBROWSE_ARCHIVE_MAX_ENTRIES
	MaxBytes   int64 // CODEBROWSE_ARCHIVE_MAX_BYTES
	MaxRatio   int64 // CODEBROWSE_ARCHIVE_MAX_RATIO
}

// Cap is the byte cap for an archive of archiveBytes: the smaller of MaxBytes and MaxRatio times
// its size.
func (l Limits) Cap(archiveBytes int64) int64 {
	c := archiveBytes * l.MaxRatio
	if l.MaxRatio != 0 && c/l.MaxRatio != archiveBytes || c > l.MaxBytes {
		return l.MaxBytes
	}
	return c
}

// Name limits of Linux file systems: a component, and a whole path.
const (
	maxComponent = 255
	maxPath      = 4095
)

// components splits a name as the unpacker walks it: "./a//b/./c/" is a, b, c; ".." stays (and
// is refused). Zips take a backslash for a separator, as unzip does with archives made on Windows.
func components(name string, zip bool) []string {
	if zip {
		name = strings.ReplaceAll(name, `\`, "/")
	}
	var out []string
	for _, c := range strings.Split(name, "/") {
		if c != "" && c != "." {
			out = append(out, c)
		}
	}
	return out
}

func absolute(name string, zip bool) bool {
	if zip {
		name = strings.ReplaceAll(name, `\`, "/")
	}
	if strings.HasPrefix(name, "/") {
		return true
	}
	return len(name) >= 2 && name[1] == ':' && (name[0] >= 'A' && name[0] <= 'Z' || name[0] >= 'a' && name[0] <= 'z')
}

func hasParent(comps []string) bool {
	for _, c := range comps {
		if c == ".." {
			return true
		}
	}
	return false
}

// viaLink is the first proper prefix of comps that the archive makes a symlink ("" when none).
func viaLink(comps []string, links map[string]bool) string {
	for k := 1; k < len(comps); k++ {
		if p := strings.Join(comps[:k], "/"); links[p] {
			return p
		}
	}
	return ""
}

// Where a symlink at comps with target t points, relative to the archive root: "!" outside it,
// "~" through another symlink of the archive (which a lexical walk cannot follow).
func resolve(comps, target []string, links map[string]bool) string {
	stack := append([]string(nil), comps[:len(comps)-1]...)
	for k, c := range target {
		if c == ".." {
			if len(stack) == 0 {
				return "!"
			}
			stack = stack[:len(stack)-1]
			continue
		}
		stack = append(stack, c)
		if k < len(target)-1 && links[strings.Join(stack, "/")] {
			return "~"
		}
	}
	return strings.Join(stack, "/")
}

// Shown is a name as the refusal shows it: C-quoted as tar --quoting-style=c lists it (without
// the outer quotes), so no name can forge a line of the report.
func Shown(name string) string {
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\a':
			b.WriteString(`\a`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\v':
			b.WriteString(`\v`)
		default:
			if c < 0x20 || c >= 0x7f {
				fmt.Fprintf(&b, `\%03o`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	return b.String()
}

func tooLong(comps []string) bool {
	if len(strings.Join(comps, "/")) > maxPath {
		return true
	}
	for _, c := range comps {
		if len(c) > maxComponent {
			return true
		}
	}
	return false
}

// CheckRecords applies the rules every entry must pass, in the order of the listing, and refuses
// with the first that fails. max is the byte cap for the sum of the files' sizes.
//
// In the order the shell agent checks them: absolute-path, parent-dir, special-file,
// through-symlink, absolute-link and link-escape (symlinks), hardlink-escape, size; and three
// more this agent adds where tar or unzip failed half-way without naming a rule: name-too-long,
// not-a-directory (an entry under a file of the archive) and duplicate-entry (a name given
// twice, where one is not a directory: tar overwrote, unzip -n kept the first).
func CheckRecords(records []Record, max int64, zip bool) *Refusal {
	links := map[string]bool{}
	for _, r := range records {
		if r.Type == 'l' {
			links[strings.Join(components(r.Name, zip), "/")] = true
		}
	}
	seen := map[string]byte{} // the type each name has so far; 'd' also for implied parents
	var total int64
	for _, r := range records {
		comps := components(r.Name, zip)
		name := strings.Join(comps, "/")
		shown := `"` + Shown(r.Name) + `"`
		if absolute(r.Name, zip) {
			return refuse("absolute-path", "entry %s has an absolute path", shown)
		}
		if hasParent(comps) {
			return refuse("parent-dir", "entry %s has a .. component", shown)
		}
		if tooLong(comps) {
			return refuse("name-too-long", "entry %s has a name longer than a file system takes (%d bytes a component, %d in all)", shown, maxComponent, maxPath)
		}
		switch r.Type {
		case 'f', 'd', 'l', 'h':
		default:
			return refuse("special-file", "entry %s is a device, fifo or socket (type %c)", shown, r.Type)
		}
		if v := viaLink(comps, links); v != "" {
			return refuse("through-symlink", "entry %s goes through the symlink \"%s\" of the same archive", shown, Shown(v))
		}
		if r.Type == 'l' {
			target := `"` + Shown(r.Target) + `"`
			if r.Target == "" {
				return refuse("link-escape", "symlink %s has no readable target", shown)
			}
			if strings.HasPrefix(r.Target, "/") || zip && strings.HasPrefix(r.Target, `\`) {
				return refuse("absolute-link", "symlink %s points to the absolute path %s", shown, target)
			}
			if len(r.Target) > maxPath {
				return refuse("name-too-long", "symlink %s has a target longer than %d bytes", shown, maxPath)
			}
			if len(comps) == 0 {
				return refuse("link-escape", "symlink %s -> %s would replace the unpack directory", shown, target)
			}
			switch resolve(comps, components(r.Target, zip), links) {
			case "!":
				return refuse("link-escape", "symlink %s -> %s points outside the unpack directory", shown, target)
			case "~":
				return refuse("link-escape", "symlink %s -> %s points through another symlink of the archive", shown, target)
			}
		}
		if r.Type == 'h' {
			// The target must be a file the archive made before (tar links to what it has unpacked).
			tc := components(r.Target, zip)
			t := strings.Join(tc, "/")
			if absolute(r.Target, zip) || hasParent(tc) || seen[t] != 'f' || viaLink(tc, links) != "" {
				return refuse("hardlink-escape", "hardlink %s -> \"%s\" is not a file of the same archive", shown, Shown(r.Target))
			}
		}
		for k := 1; k < len(comps); k++ {
			p := strings.Join(comps[:k], "/")
			switch seen[p] {
			case 0:
				seen[p] = 'd'
			case 'd':
			default:
				return refuse("not-a-directory", "entry %s is under \"%s\", which the archive makes a file", shown, Shown(p))
			}
		}
		kind := r.Type
		if kind == 'h' {
			kind = 'f'
		}
		if name == "" && kind != 'd' {
			return refuse("duplicate-entry", "entry %s would replace the unpack directory", shown)
		}
		if had, ok := seen[name]; ok && name != "" && (had != 'd' || kind != 'd') {
			return refuse("duplicate-entry", "entry %s is in the archive twice (or under a name it has used)", shown)
		}
		seen[name] = kind
		if r.Type == 'f' {
			total += r.Size
		}
		if total > max {
			return refuse("size", "the entries add up to more than %d bytes (CODEBROWSE_ARCHIVE_MAX_BYTES / _RATIO)", max)
		}
	}
	return nil
}
