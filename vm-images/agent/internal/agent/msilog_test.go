package agent

import (
	"strings"
	"testing"
	"unicode/utf16"
)

func utf16LE(s string) []byte {
	out := []byte{0xFF, 0xFE}
	for _, u := range utf16.Encode([]rune(s)) {
		out = append(out, byte(u), byte(u>>8))
	}
	return out
}

func TestMSILogTail(t *testing.T) {
	log := "=== Verbose logging started ===\r\nAction start: LaunchConditions.\r\nProduct: café 🎉 -- Installation failed.\r\n" +
		strings.Repeat("Property(S): X = 1\r\n", 500) + "Action ended: INSTALL. Return value 3.\r\n" +
		strings.Repeat("Property(C): Y = 2\r\n", 500) + "=== Logging stopped ===\r\n"
	want := "Action start: LaunchConditions.\nProduct: café 🎉 -- Installation failed.\nAction ended: INSTALL. Return value 3.\n=== Logging stopped ===\n"
	for _, data := range [][]byte{utf16LE(log), []byte(log)} {
		if got := msiLogTail(data, 4); got != want {
			t.Fatalf("got %q", got)
		}
	}
}
