// Command verify checks the audit log's published artefacts with Go's reference implementations,
// golang.org/x/mod/sumdb/note (signed notes, Ed25519 vkeys) and golang.org/x/mod/sumdb/tlog
// (RFC 6962 record and tree proofs), so that the log is shown to interoperate with code we did not
// write. tests/audit/test_go_interop.py builds it offline in GOPATH mode against Debian's
// golang-golang-x-mod-dev and feeds it what it fetched over HTTP.
//
// Input: one JSON document on stdin (or in the file named by the only argument):
//
//	{
//	  "origin":      "<log origin, the checkpoint's first line>",
//	  "vkeys":       ["<name>+<hex key id>+<base64(0x01 || Ed25519 public key)>", ...],
//	  "checkpoints": ["<signed note text>", ...],
//	  "inclusion":   [{"index": i, "size": n, "leaf": "<base64 leaf bytes>",
//	                   "leaf_hash": "<base64, as served>", "proof": ["<base64>", ...]}, ...],
//	  "consistency": [{"first": m, "second": n, "proof": ["<base64>", ...]}, ...]
//	}
//
// Every checkpoint must open with note.Open under the given vkeys and carry the origin; each proof
// is checked against the roots of those verified checkpoints only (a proof for a size that no
// verified checkpoint has is an error), so every root that a proof reaches is a signed one.
//
// Output: "OK: <c> checkpoints, <i> inclusion proofs, <k> consistency proofs" on stdout and exit
// status 0; otherwise "FAIL: <what>: <why>" on stderr and exit status 1 (2 for unreadable input).
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

type inclusionProof struct {
	Index    int64    `json:"index"`
	Size     int64    `json:"size"`
	Leaf     string   `json:"leaf"`
	LeafHash string   `json:"leaf_hash"`
	Proof    []string `json:"proof"`
}

type consistencyProof struct {
	First  int64    `json:"first"`
	Second int64    `json:"second"`
	Proof  []string `json:"proof"`
}

type artefacts struct {
	Origin      string             `json:"origin"`
	VKeys       []string           `json:"vkeys"`
	Checkpoints []string           `json:"checkpoints"`
	Inclusion   []inclusionProof   `json:"inclusion"`
	Consistency []consistencyProof `json:"consistency"`
}

type failure struct{ msg string }

func (f failure) Error() string { return f.msg }

func fail(format string, args ...any) error { return failure{fmt.Sprintf(format, args...)} }

// parseCheckpoint reads the C2SP tlog-checkpoint body: origin, decimal size, base64 root, then
// extension lines, which a reader that does not know them ignores. (tlog.ParseTree reads only the
// go.sum database's own body, whose first line is fixed, so the body is split here.)
func parseCheckpoint(text, origin string) (int64, tlog.Hash, error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	if len(lines) < 3 {
		return 0, tlog.Hash{}, fmt.Errorf("body has %d lines, want origin, size and root", len(lines))
	}
	if lines[0] != origin {
		return 0, tlog.Hash{}, fmt.Errorf("origin is %q, want %q", lines[0], origin)
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 || strconv.FormatInt(size, 10) != lines[1] {
		return 0, tlog.Hash{}, fmt.Errorf("size line %q is not a decimal tree size", lines[1])
	}
	root, err := tlog.ParseHash(lines[2])
	if err != nil {
		return 0, tlog.Hash{}, fmt.Errorf("root line %q: %v", lines[2], err)
	}
	return size, root, nil
}

func parseHashes(encoded []string) ([]tlog.Hash, error) {
	hashes := make([]tlog.Hash, len(encoded))
	for i, text := range encoded {
		h, err := tlog.ParseHash(text)
		if err != nil {
			return nil, fmt.Errorf("proof[%d] %q: %v", i, text, err)
		}
		hashes[i] = h
	}
	return hashes, nil
}

func verify(in artefacts) (string, error) {
	// 1. The published vkeys, parsed by note.NewVerifier (name+hash+base64(0x01 || key)).
	if len(in.VKeys) == 0 {
		return "", fail("no vkeys given")
	}
	verifiers := make([]note.Verifier, len(in.VKeys))
	for i, vkey := range in.VKeys {
		v, err := note.NewVerifier(vkey)
		if err != nil {
			return "", fail("vkey[%d] %q: %v", i, vkey, err)
		}
		verifiers[i] = v
	}
	known := note.VerifierList(verifiers...)

	// 2. Every checkpoint must open under those keys; remember the signed root of each size.
	if len(in.Checkpoints) == 0 {
		return "", fail("no checkpoints given")
	}
	roots := make(map[int64]tlog.Hash)
	for i, text := range in.Checkpoints {
		n, err := note.Open([]byte(text), known)
		if err != nil {
			return "", fail("checkpoint[%d]: note.Open: %v", i, err)
		}
		size, root, err := parseCheckpoint(n.Text, in.Origin)
		if err != nil {
			return "", fail("checkpoint[%d]: %v", i, err)
		}
		if seen, ok := roots[size]; ok && seen != root {
			return "", fail("checkpoint[%d]: size %d signed with two roots (%v and %v): the log forked", i, size, seen, root)
		}
		roots[size] = root
	}
	signedRoot := func(size int64) (tlog.Hash, error) {
		root, ok := roots[size]
		if !ok {
			return tlog.Hash{}, fmt.Errorf("no verified checkpoint of size %d", size)
		}
		return root, nil
	}

	// 3. Inclusion: the record hash is computed here from the leaf bytes (tlog.RecordHash is
	// SHA-256(0x00 || leaf), RFC 6962), never taken from the server.
	for i, p := range in.Inclusion {
		what := fmt.Sprintf("inclusion[%d] (index %d, size %d)", i, p.Index, p.Size)
		leaf, err := base64.StdEncoding.DecodeString(p.Leaf)
		if err != nil {
			return "", fail("%s: leaf is not base64: %v", what, err)
		}
		record := tlog.RecordHash(leaf)
		if p.LeafHash != "" {
			served, err := tlog.ParseHash(p.LeafHash)
			if err != nil {
				return "", fail("%s: leaf_hash: %v", what, err)
			}
			if served != record {
				return "", fail("%s: served leaf_hash %v is not tlog.RecordHash(leaf) %v", what, served, record)
			}
		}
		proof, err := parseHashes(p.Proof)
		if err != nil {
			return "", fail("%s: %v", what, err)
		}
		root, err := signedRoot(p.Size)
		if err != nil {
			return "", fail("%s: %v", what, err)
		}
		if err := tlog.CheckRecord(proof, p.Size, root, p.Index, record); err != nil {
			return "", fail("%s: tlog.CheckRecord: %v", what, err)
		}
	}

	// 4. Consistency between two signed sizes (tlog.CheckTree; equal sizes need an empty proof).
	for i, p := range in.Consistency {
		what := fmt.Sprintf("consistency[%d] (%d -> %d)", i, p.First, p.Second)
		proof, err := parseHashes(p.Proof)
		if err != nil {
			return "", fail("%s: %v", what, err)
		}
		first, err := signedRoot(p.First)
		if err != nil {
			return "", fail("%s: %v", what, err)
		}
		second, err := signedRoot(p.Second)
		if err != nil {
			return "", fail("%s: %v", what, err)
		}
		if err := tlog.CheckTree(proof, p.Second, second, p.First, first); err != nil {
			return "", fail("%s: tlog.CheckTree: %v", what, err)
		}
	}
	return fmt.Sprintf("OK: %d checkpoints, %d inclusion proofs, %d consistency proofs",
		len(in.Checkpoints), len(in.Inclusion), len(in.Consistency)), nil
}

func main() {
	var source io.Reader = os.Stdin
	if len(os.Args) == 2 {
		file, err := os.Open(os.Args[1])
		if err != nil {
			fmt.Fprintf(os.Stderr, "input: %v\n", err)
			os.Exit(2)
		}
		defer file.Close()
		source = file
	} else if len(os.Args) > 2 {
		fmt.Fprintln(os.Stderr, "usage: verify [artefacts.json]  (default: stdin)")
		os.Exit(2)
	}
	decoder := json.NewDecoder(source)
	decoder.DisallowUnknownFields()
	var in artefacts
	if err := decoder.Decode(&in); err != nil {
		fmt.Fprintf(os.Stderr, "input: not the artefacts JSON: %v\n", err)
		os.Exit(2)
	}
	summary, err := verify(in)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(summary)
}
