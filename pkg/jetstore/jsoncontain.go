package jetstore

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
)

// ContainsJSON reports whether the JSON value haystack contains the JSON
// value needle, with the semantics of PostgreSQL's jsonb @> operator:
//
//   - an object contains an object if every key of the needle is in the
//     haystack with a value that contains the needle's value (recursively;
//     other keys of the haystack do not matter);
//   - an array contains an array if every element of the needle is
//     contained in some element of the haystack (order and repetition do not
//     matter);
//   - as a special case at the top level only, an array contains a scalar
//     that equals one of its elements;
//   - scalars contain equal scalars: numbers compare by value (1 and 1.0
//     are equal), strings byte-wise.
//
// Values of different kinds do not contain each other. Invalid JSON on
// either side contains and is contained by nothing.
func ContainsJSON(haystack, needle []byte) bool {
	h, ok := decodeJSON(haystack)
	if !ok {
		return false
	}
	n, ok := decodeJSON(needle)
	if !ok {
		return false
	}
	if arr, isArr := h.([]any); isArr && isScalar(n) {
		for _, e := range arr {
			if scalarEqual(e, n) {
				return true
			}
		}
		return false
	}
	return contains(h, n)
}

func decodeJSON(b []byte) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	if dec.More() {
		return nil, false
	}
	// Nothing but white space may follow the value.
	if _, err := dec.Token(); err == nil {
		return nil, false
	}
	return v, true
}

func isScalar(v any) bool {
	switch v.(type) {
	case map[string]any, []any:
		return false
	}
	return true
}

func contains(h, n any) bool {
	switch nv := n.(type) {
	case map[string]any:
		hv, ok := h.(map[string]any)
		if !ok {
			return false
		}
		for k, want := range nv {
			got, ok := hv[k]
			if !ok || !contains(got, want) {
				return false
			}
		}
		return true
	case []any:
		hv, ok := h.([]any)
		if !ok {
			return false
		}
		for _, want := range nv {
			found := false
			for _, got := range hv {
				if contains(got, want) {
					found = true
					break
				}
			}
			if !found {
				return false
			}
		}
		return true
	}
	return scalarEqual(h, n)
}

func scalarEqual(a, b any) bool {
	switch av := a.(type) {
	case json.Number:
		bv, ok := b.(json.Number)
		if !ok {
			return false
		}
		return av == bv || canonicalNumber(string(av)) == canonicalNumber(string(bv))
	case string:
		bv, ok := b.(string)
		return ok && av == bv
	case bool:
		bv, ok := b.(bool)
		return ok && av == bv
	case nil:
		return b == nil
	}
	return false
}

// canonicalNumber writes a JSON number as sign, significant digits and
// exponent, so that numbers equal in value are equal as strings, without
// ever expanding the exponent (which may be huge).
func canonicalNumber(s string) string {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	mant, exp := s, int64(0)
	if i := strings.IndexAny(s, "eE"); i >= 0 {
		e, err := strconv.ParseInt(strings.TrimPrefix(s[i+1:], "+"), 10, 64)
		if err != nil || e > 1<<60 || e < -(1<<60) {
			return "?" + s // beyond any sensible comparison: only equal to itself
		}
		mant, exp = s[:i], e
	}
	digits := mant
	if i := strings.IndexByte(mant, '.'); i >= 0 {
		digits = mant[:i] + mant[i+1:]
		exp -= int64(len(mant) - i - 1)
	}
	digits = strings.TrimLeft(digits, "0")
	if digits == "" {
		return "0"
	}
	trimmed := strings.TrimRight(digits, "0")
	exp += int64(len(digits) - len(trimmed))
	sign := "+"
	if neg {
		sign = "-"
	}
	return sign + trimmed + "e" + strconv.FormatInt(exp, 10)
}
