package messages

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode"
)

// FuzzDecode feeds arbitrary bytes to every Decode function. None may
// panic; each either refuses the bytes with ErrMalformed or ErrVersion, or
// returns a value that encodes and decodes again to an equal value.
func FuzzDecode(f *testing.F) {
	for _, d := range decoders {
		b, err := Encode(d.sample())
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	for _, v := range []any{
		&OrchestratorWork{V: SchemaVersion, InstanceID: "i", Events: []Event{{Type: EventRaised}}},
		&ActivityTask{V: SchemaVersion, InstanceID: "i", Name: "n"},
		&Delayed{V: SchemaVersion, Subject: ActivitySubject("i")},
		&Command{V: SchemaVersion, Kind: CmdStart},
		&Reply{V: SchemaVersion},
		&Status{V: SchemaVersion, RuntimeStatus: StatusRunning},
		&Episode{V: SchemaVersion},
		&Status{V: 2, RuntimeStatus: StatusRunning},
	} {
		b, err := Encode(v)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, junk := range []string{"", "\xc0", "\x80", "\x90", "\xff", "\xdf\xff\xff\xff\xff", "hello", `{"v":1}`, "\x81\xa1v\x01"} {
		f.Add([]byte(junk))
	}

	f.Fuzz(func(t *testing.T, b []byte) {
		for _, d := range decoders {
			v, err := d.decode(b)
			if err != nil {
				if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) {
					t.Fatalf("%s: error %v wraps neither ErrMalformed nor ErrVersion", d.name, err)
				}
				if v != nil {
					t.Fatalf("%s: returned a value with error %v", d.name, err)
				}
				continue
			}
			b2, err := Encode(v)
			if err != nil {
				t.Fatalf("%s: accepted value does not encode: %v", d.name, err)
			}
			v2, err := d.decode(b2)
			if err != nil {
				t.Fatalf("%s: re-encoded value refused: %v\nvalue %+v", d.name, err, v)
			}
			if !reflect.DeepEqual(normalize(v), normalize(v2)) {
				t.Fatalf("%s: round trip changed the value:\nfirst  %+v\nsecond %+v", d.name, v, v2)
			}
		}
	})
}

// FuzzInstanceID checks that an accepted instance ID cannot escape its
// subject token and that Token is reversible for every string.
func FuzzInstanceID(f *testing.F) {
	for _, s := range []string{"order-1", "a=b", "=3D", "é", "🚀:1", "a.b", "a b", "*", ">", "\xff", "", "a\x00", "注文", strings.Repeat("z", 256)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, id string) {
		tok := Token(id)
		back, err := ParseToken(tok)
		if err != nil || back != id {
			t.Fatalf("ParseToken(Token(%q)) = %q, %v", id, back, err)
		}
		if !tokenCharsOK(tok) {
			t.Fatalf("Token(%q) = %q has characters outside [A-Za-z0-9_=-]", id, tok)
		}
		if err := ValidateInstanceID(id); err != nil {
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("ValidateInstanceID(%q) = %v, not ErrInvalidID", id, err)
			}
			return
		}
		if strings.ContainsAny(id, ".*>") || strings.IndexFunc(id, unicode.IsSpace) >= 0 {
			t.Fatalf("ValidateInstanceID accepted %q", id)
		}
		if strings.ContainsAny(tok, ".*>") || strings.IndexFunc(tok, unicode.IsSpace) >= 0 {
			t.Fatalf("Token(%q) = %q can escape its subject token", id, tok)
		}
		if !IsWorkSubject(OrchestratorSubject(id)) || !IsWorkSubject(ActivitySubject(id)) {
			t.Fatalf("subjects of accepted ID %q are not work subjects", id)
		}
	})
}
