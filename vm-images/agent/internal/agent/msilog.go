package agent

import (
	"strings"
	"unicode/utf16"
)

// Windows only (install_windows.go), here so that its tests run on any machine.

// decodeMSILog is msiexec's log as text: UTF-16 (little-endian, with its byte order mark) or
// 8-bit (Wine's msiexec writes it so); line ends become "\n".
func decodeMSILog(data []byte) string {
	text := string(data)
	if len(data) >= 2 && data[0] == 0xFF && data[1] == 0xFE {
		units := make([]uint16, 0, len(data)/2)
		for i := 2; i+1 < len(data); i += 2 {
			units = append(units, uint16(data[i])|uint16(data[i+1])<<8)
		}
		text = string(utf16.Decode(units))
	}
	return strings.ReplaceAll(text, "\r\n", "\n")
}

// msiLogTail is the last n lines of msiexec's verbose log without its property dumps: every log
// ends with hundreds of "Property(S):" and "Property(C):" lines, after the actions' results and
// errors that say why an install failed.
func msiLogTail(data []byte, n int) string {
	var kept []string
	for _, line := range strings.Split(strings.TrimRight(decodeMSILog(data), "\n"), "\n") {
		if !strings.HasPrefix(line, "Property(") {
			kept = append(kept, line)
		}
	}
	if len(kept) > n {
		kept = kept[len(kept)-n:]
	}
	return strings.Join(kept, "\n") + "\n"
}
