// Package messages holds jetflow's wire and storage types, encoded with
// msgpack: history events, the work items that travel on the orchestrator
// and activity streams, client commands and their replies, and the status
// record clients read.
//
// # Versions and strict decoding
//
// Every envelope carries the schema version SchemaVersion. The Decode
// functions refuse unknown versions (ErrVersion), and malformed bytes,
// unknown fields, trailing bytes and unknown enum values (ErrMalformed);
// none of them panics, whatever the input. Enums have an invalid zero value.
//
// # Identifiers and subjects
//
// ValidateInstanceID and ValidateName say which identifiers are accepted.
// Token turns a valid identifier into a NATS subject token and KV key part,
// one to one, so that no ID can escape its subject namespace. The subject
// and stream names are the constants and functions in ids.go;
// docs/PROTOCOL.md describes them for clients in other languages.
package messages
