package jetstore_test

import (
	"testing"

	"github.com/jetflow/jetflow/pkg/jetstore"
)

// TestContainsJSON follows the examples of PostgreSQL's documentation of
// jsonb containment, and a few more.
func TestContainsJSON(t *testing.T) {
	for _, c := range []struct {
		haystack, needle string
		want             bool
	}{
		// Scalars.
		{`"foo"`, `"foo"`, true},
		{`"foo"`, `"bar"`, false},
		{`1`, `1.0`, true},
		{`1e2`, `100`, true},
		{`-0`, `0`, true},
		{`0.10`, `1E-1`, true},
		{`1`, `2`, false},
		{`1`, `"1"`, false},
		{`true`, `true`, true},
		{`true`, `false`, false},
		{`null`, `null`, true},
		{`null`, `false`, false},
		{`1e999999999999`, `1e999999999999`, true},
		{`1e999999999999`, `2e999999999999`, false},
		// Arrays: every needle element in some haystack element.
		{`[1, 2, 3]`, `[1, 3]`, true},
		{`[1, 2, 3]`, `[3, 1]`, true},
		{`[1, 2, 3]`, `[1, 1]`, true},
		{`[1, 2, 3]`, `[1, 4]`, false},
		{`[1, 2, 3]`, `[]`, true},
		{`[]`, `[]`, true},
		{`[1, 2, [1, 3]]`, `[1, 3]`, false}, // PostgreSQL: nesting differs
		{`[1, 2, [1, 3]]`, `[[1, 3]]`, true},
		{`[1, 2, [1, 3]]`, `[[3]]`, true},
		{`[1, [2]]`, `[[1]]`, false},
		{`[{"a": 1, "b": 2}, {"c": 3}]`, `[{"a": 1}]`, true},
		{`[{"a": 1, "b": 2}, {"c": 3}]`, `[{"a": 1, "c": 3}]`, false},
		// Top-level exception: an array contains a scalar element.
		{`["foo", "bar"]`, `"bar"`, true},
		{`["foo", "bar"]`, `"baz"`, false},
		{`{"a": ["x"]}`, `{"a": "x"}`, false}, // not below the top level
		// Objects: key-wise, recursively.
		{`{"product": "PostgreSQL", "version": 9.4, "jsonb": true}`, `{"version": 9.4}`, true},
		{`{"a": 1, "b": {"c": 2, "d": 3}}`, `{"b": {"d": 3}}`, true},
		{`{"a": 1, "b": {"c": 2, "d": 3}}`, `{"b": {"d": 4}}`, false},
		{`{"a": 1, "b": {"c": 2, "d": 3}}`, `{"d": 3}`, false},
		{`{"a": 1}`, `{}`, true},
		{`{}`, `{"a": 1}`, false},
		{`{"tags": ["x", "y"], "n": 1}`, `{"tags": ["y"]}`, true},
		{`{"tags": ["x", "y"]}`, `{"tags": ["z"]}`, false},
		{`{"a": null}`, `{"a": null}`, true},
		{`{}`, `{"a": null}`, false},
		{`{"foo": {"bar": "baz"}}`, `{"bar": "baz"}`, false},
		// Kinds differ.
		{`{"a": 1}`, `[{"a": 1}]`, false},
		{`[{"a": 1}]`, `{"a": 1}`, false},
		{`"x"`, `["x"]`, false},
		// Invalid JSON.
		{`{"a":`, `{}`, false},
		{`{}`, `{"a":`, false},
		{``, `{}`, false},
		{`{} {}`, `{}`, false},
		{` {"a": 1} `, ` {"a": 1}`, true},
	} {
		if got := jetstore.ContainsJSON([]byte(c.haystack), []byte(c.needle)); got != c.want {
			t.Errorf("ContainsJSON(%s, %s) = %v, want %v", c.haystack, c.needle, got, c.want)
		}
	}
}
