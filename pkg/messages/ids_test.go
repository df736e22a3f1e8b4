package messages

import (
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestValidateInstanceID(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   string
		ok   bool
	}{
		{"empty", "", false},
		{"257 bytes", strings.Repeat("a", 257), false},
		{"257 bytes of multibyte", strings.Repeat("é", 128) + "a", false},
		{"dot", "a.b", false},
		{"leading dot", ".a", false},
		{"star", "a*", false},
		{"gt", ">", false},
		{"gt inside", "a>b", false},
		{"space", "a b", false},
		{"tab", "a\tb", false},
		{"newline", "a\n", false},
		{"carriage return", "\ra", false},
		{"NUL", "a\x00b", false},
		{"control char", "a\x01b", false},
		{"DEL", "a\x7fb", false},
		{"C1 control", "a\u0085b", false},
		{"no-break space", "a\u00a0b", false},
		{"em space", "a\u2003b", false},
		{"line separator", "a\u2028b", false},
		{"invalid UTF-8", "a\xffb", false},
		{"truncated UTF-8", "\xe2\x82", false},
		{"overlong UTF-8", "\xc0\xae", false}, // an overlong '.'
		{"surrogate half in UTF-8", "\xed\xa0\x80", false},

		{"simple", "order-42", true},
		{"one byte", "x", true},
		{"256 bytes", strings.Repeat("a", 256), true},
		{"256 bytes of multibyte", strings.Repeat("é", 128), true},
		{"colon", "parent:3", true},
		{"dash and underscore", "a-b_c", true},
		{"equals", "a=b", true},
		{"unicode", "заказ-№7", true},
		{"CJK", "注文:1", true},
		{"emoji", "🚀launch", true},
		{"punctuation", "a/b\\c#d@e!f,g;h", true},
		{"uuid", NewID(), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateInstanceID(tc.id)
			if tc.ok {
				if err != nil {
					t.Fatalf("ValidateInstanceID(%q) = %v, want nil", tc.id, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("ValidateInstanceID(%q) accepted", tc.id)
			}
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("ValidateInstanceID(%q) = %v, not wrapping ErrInvalidID", tc.id, err)
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"Charge", "a.b", "a*b", "a>b", "Ünïcode", strings.Repeat("n", 256)} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a b", "a\tb", "a\x00", "\xff", strings.Repeat("n", 257)} {
		if err := ValidateName(bad); !errors.Is(err, ErrInvalidID) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidID", bad, err)
		}
	}
}

func TestValidateErrorTruncatesLongIDs(t *testing.T) {
	id := strings.Repeat("x", 200) + " "
	err := ValidateInstanceID(id)
	if err == nil {
		t.Fatal("accepted")
	}
	if strings.Contains(err.Error(), id[:100]) {
		t.Errorf("error quotes the whole long ID: %v", err)
	}
}

func tokenCharsOK(tok string) bool {
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '=') {
			return false
		}
	}
	return true
}

func TestToken(t *testing.T) {
	for _, tc := range []struct{ id, tok string }{
		{"abc", "abc"},
		{"A-Z_09", "A-Z_09"},
		{"a=b", "a=3Db"},
		{"=", "=3D"},
		{"==", "=3D=3D"},
		{"=3D", "=3D3D"},
		{"a:b", "a=3Ab"},
		{"a.b", "a=2Eb"},
		{"a b", "a=20b"},
		{"é", "=C3=A9"},
		{"🚀", "=F0=9F=9A=80"},
		{"\xff", "=FF"},
		{"", ""},
	} {
		if got := Token(tc.id); got != tc.tok {
			t.Errorf("Token(%q) = %q, want %q", tc.id, got, tc.tok)
		}
		back, err := ParseToken(tc.tok)
		if err != nil || back != tc.id {
			t.Errorf("ParseToken(%q) = %q, %v; want %q", tc.tok, back, err, tc.id)
		}
	}
}

func TestParseTokenBadEscapes(t *testing.T) {
	for _, tok := range []string{"=", "a=", "=4", "ab=4", "=ZZ", "=G0", "=0G", "a=3Db=", "= 1"} {
		if got, err := ParseToken(tok); !errors.Is(err, ErrInvalidID) {
			t.Errorf("ParseToken(%q) = %q, %v; want ErrInvalidID", tok, got, err)
		}
	}
}

// randomID returns a random string that mixes token-safe bytes, characters
// Token must escape (including '=' and non-ASCII) and, if raw, arbitrary bytes.
func randomID(rng *rand.Rand, raw bool) string {
	alphabet := []string{"a", "Z", "0", "-", "_", "=", ":", "é", "注", "🚀", "%", "+", "/", "~", "\u200b"}
	var b strings.Builder
	n := 1 + rng.IntN(40)
	for i := 0; i < n; i++ {
		if raw && rng.IntN(4) == 0 {
			b.WriteByte(byte(rng.Uint32()))
			continue
		}
		b.WriteString(alphabet[rng.IntN(len(alphabet))])
	}
	return b.String()
}

func TestTokenRoundTripProperty(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	seen := map[string]string{}
	for i := 0; i < 20000; i++ {
		id := randomID(rng, i%2 == 1)
		tok := Token(id)
		if !tokenCharsOK(tok) {
			t.Fatalf("Token(%q) = %q has characters outside [A-Za-z0-9_=-]", id, tok)
		}
		back, err := ParseToken(tok)
		if err != nil || back != id {
			t.Fatalf("ParseToken(Token(%q)) = %q, %v", id, back, err)
		}
		if prev, dup := seen[tok]; dup && prev != id {
			t.Fatalf("Token(%q) == Token(%q) == %q", id, prev, tok)
		}
		seen[tok] = id
		if ValidateInstanceID(id) == nil && !IsWorkSubject(OrchestratorSubject(id)) {
			t.Fatalf("OrchestratorSubject(%q) = %q is not a work subject", id, OrchestratorSubject(id))
		}
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		id := NewID()
		if len(id) != 32 || ValidateInstanceID(id) != nil || Token(id) != id {
			t.Fatalf("NewID() = %q is not a plain 32-character ID", id)
		}
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
}

func TestSubjects(t *testing.T) {
	id := "a.b c"
	for _, tc := range []struct{ got, want string }{
		{OrchestratorSubject(id), "jetflow.orch.a=2Eb=20c"},
		{ActivitySubject(id), "jetflow.act.a=2Eb=20c"},
		{DelaySubject(id), "jetflow.delay.a=2Eb=20c"},
		{CommandSubject(CmdRaiseEvent), "jetflow.cmd.raise"},
		{CommandSubject(cmdEnd), "jetflow.cmd.unknown"},
	} {
		if tc.got != tc.want {
			t.Errorf("subject %q, want %q", tc.got, tc.want)
		}
	}
	for s, want := range map[string]bool{
		OrchestratorSubject(id): true, ActivitySubject(id): true, DelaySubject(id): false,
		"jetflow.orch.": false, "jetflow.orch.a.b": false, "jetflow.orch.*": false, "jetflow.act.>": false,
		"jetflow.orch": false, "jetflow.orchx.a": false, "": false,
	} {
		if got := IsWorkSubject(s); got != want {
			t.Errorf("IsWorkSubject(%q) = %v, want %v", s, got, want)
		}
	}
	if !utf8.ValidString(OrchestratorSubject("\xff")) {
		t.Error("subject of invalid UTF-8 is not ASCII")
	}
}
