package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// The format of a landed file: any content, then a last line that is its
// checksum trailer, "sha256 " and the 64 hex digits of the SHA-256 of
// every byte before that line:
//
//	hello world
//	sha256 a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447
//
// A file without a trailer may still be being written: that failure is
// retried. A file whose trailer does not match its content is corrupt:
// no retry can fix it.
const trailerPrefix = "sha256 "

var (
	// ErrIncomplete: the file has no checksum trailer (yet).
	ErrIncomplete = errors.New("filewatch: incomplete file")
	// ErrCorrupt: the trailer does not match the content. A CorruptError
	// wraps it with the details.
	ErrCorrupt = errors.New("filewatch: corrupt file")
)

// CorruptError says which file is corrupt and why.
type CorruptError struct {
	Name      string
	Trailer   string // the checksum the trailer states
	Content   string // the checksum of the content
	Malformed string // when the trailer cannot be read: what is wrong with it
}

func (e *CorruptError) Error() string {
	if e.Malformed != "" {
		return fmt.Sprintf("filewatch: %s is corrupt: %s", e.Name, e.Malformed)
	}
	return fmt.Sprintf("filewatch: %s is corrupt: checksum mismatch: the trailer says sha256 %s, the content hashes to %s", e.Name, e.Trailer, e.Content)
}

// Unwrap makes errors.Is(err, ErrCorrupt) hold.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// verify checks data, the content of the file name, against its trailer
// and returns the content before the trailer and its checksum.
func verify(name string, data []byte) (body []byte, sum string, err error) {
	rest := bytes.TrimSuffix(data, []byte("\n"))
	cut := bytes.LastIndexByte(rest, '\n') + 1 // 0 when the trailer is the only line
	body, trailer := data[:cut], string(rest[cut:])
	if len(trailer) < len(trailerPrefix) || trailer[:len(trailerPrefix)] != trailerPrefix {
		return nil, "", fmt.Errorf("%w: %s has no checksum trailer (the last line must be %q)", ErrIncomplete, name, trailerPrefix+"<64 hex digits>")
	}
	want := trailer[len(trailerPrefix):]
	if b, err := hex.DecodeString(want); err != nil || len(b) != sha256.Size {
		return nil, "", &CorruptError{Name: name, Malformed: fmt.Sprintf("bad trailer %q: want 64 hex digits", trailer)}
	}
	h := sha256.Sum256(body)
	if sum = hex.EncodeToString(h[:]); sum != want {
		return nil, "", &CorruptError{Name: name, Trailer: want, Content: sum}
	}
	return body, sum, nil
}
