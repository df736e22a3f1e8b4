package messages

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// FuzzName: a name ValidateName accepts is 1 to 256 bytes of valid UTF-8
// with no white space or control characters, and encodes to a token that
// round-trips and stays inside one subject token.
func FuzzName(f *testing.F) {
	for _, s := range []string{"E1_SayHello", "CitySelected", "a b", "", "\x00", "é", strings.Repeat("n", 257), "a.b*c>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		if err := ValidateName(name); err != nil {
			return
		}
		if name == "" || len(name) > MaxIDLen || !utf8.ValidString(name) {
			t.Fatalf("accepted %q", name)
		}
		for _, r := range name {
			if unicode.IsSpace(r) || unicode.IsControl(r) {
				t.Fatalf("accepted %q with %q", name, r)
			}
		}
		tok := Token(name)
		if strings.ContainsAny(tok, ".*> \t\r\n") {
			t.Fatalf("token %q of %q can escape its subject token", tok, name)
		}
		if back, err := ParseToken(tok); err != nil || back != name {
			t.Fatalf("token %q of %q parses back to %q, %v", tok, name, back, err)
		}
	})
}
