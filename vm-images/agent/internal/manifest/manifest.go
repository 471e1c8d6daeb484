// Package manifest reads the session manifest the portal serves (GET /agent/v1/manifest). The
// whole document must be JSON, or none of it is taken (a truncated manifest is never half-read).
// Values are read the way the shell agent's json_get reads them, by a dotted path
// ("packages.0.url"): a string decoded, a number or boolean as its JSON text, and null, an object
// or an array as absent; fields the agent does not know are ignored.
package manifest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Manifest is one parsed manifest.
type Manifest struct {
	root any
}

// Parse reads a whole manifest; an error when it is not one JSON object.
func Parse(data []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var root any
	if err := dec.Decode(&root); err != nil {
		return nil, fmt.Errorf("json: %w", err)
	}
	if rest := bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return nil, errors.New("json: trailing text after the document")
	}
	if _, ok := root.(map[string]any); !ok {
		return nil, errors.New("json: the manifest is not an object")
	}
	return &Manifest{root: root}, nil
}

func (m *Manifest) lookup(path string) (any, bool) {
	node := m.root
	for _, key := range strings.Split(path, ".") {
		switch v := node.(type) {
		case map[string]any:
			next, ok := v[key]
			if !ok {
				return nil, false
			}
			node = next
		case []any:
			i, err := strconv.Atoi(key)
			if err != nil || i < 0 || i >= len(v) || strconv.Itoa(i) != key {
				return nil, false
			}
			node = v[i]
		default:
			return nil, false
		}
	}
	return node, true
}

// Raw is the value at path byte for byte: strings decoded, numbers and booleans as their JSON
// text; false when the path is absent, null, an object or an array.
func (m *Manifest) Raw(path string) (string, bool) {
	v, ok := m.lookup(path)
	if !ok {
		return "", false
	}
	switch v := v.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool:
		return strconv.FormatBool(v), true
	}
	return "", false
}

// Get is Raw as a shell's $(...) reads it: trailing line breaks dropped. Every one-line field
// (user, hostname, addresses, URLs) is read so.
func (m *Manifest) Get(path string) (string, bool) {
	v, ok := m.Raw(path)
	return strings.TrimRight(v, "\n"), ok
}

// String is Get, or "" when absent.
func (m *Manifest) String(path string) string {
	v, _ := m.Get(path)
	return v
}

// Count is the length of the array at path (0 when it is absent or not an array).
func (m *Manifest) Count(path string) int {
	v, ok := m.lookup(path)
	if !ok {
		return 0
	}
	a, _ := v.([]any)
	return len(a)
}

// Session is the manifest's "session" ("unknown" without one).
func (m *Manifest) Session() string {
	if s, ok := m.Get("session"); ok {
		return s
	}
	return "unknown"
}

// PackageIndex is the index the manifest gives package k (its position when it gives none, or
// one that is not a plain non-negative integer).
func (m *Manifest) PackageIndex(k int) string {
	i, ok := m.Get(fmt.Sprintf("packages.%d.index", k))
	if !ok || i == "" || strings.Trim(i, "0123456789") != "" {
		return strconv.Itoa(k)
	}
	return i
}

// Package is one entry of "packages", as the agent uses it.
type Package struct {
	K        int    // position in the manifest
	Index    string // what reports name it by
	URL      string
	Filename string // the manifest's file name; "" when it gives none
	Digest   string
	Download string
	// Install holds the package's own install steps (its codebrowse.yaml "install"), each a
	// shell script run as root; nil when it has none.
	Install []string
}

// Packages lists the packages in manifest order.
func (m *Manifest) Packages() []Package {
	n := m.Count("packages")
	out := make([]Package, 0, n)
	for k := 0; k < n; k++ {
		p := fmt.Sprintf("packages.%d.", k)
		pkg := Package{
			K:        k,
			Index:    m.PackageIndex(k),
			URL:      m.String(p + "url"),
			Filename: m.String(p + "filename"),
			Digest:   m.String(p + "digest"),
			Download: m.String(p + "download"),
		}
		for s := 0; s < m.Count(p+"install"); s++ {
			step, _ := m.Raw(fmt.Sprintf("%sinstall.%d", p, s))
			pkg.Install = append(pkg.Install, step)
		}
		out = append(out, pkg)
	}
	return out
}

// Strings is the array of strings at path (sshKeys, network.dns), each read as Raw; entries that
// are not scalars are left out.
func (m *Manifest) Strings(path string) []string {
	var out []string
	for i := 0; i < m.Count(path); i++ {
		if v, ok := m.Raw(fmt.Sprintf("%s.%d", path, i)); ok {
			out = append(out, v)
		}
	}
	return out
}
