// Command reforacle answers, for each image string it reads, what the Go library
// github.com/distribution/reference (the parser the kubelet and containerd use) makes
// of it. Input: one JSON string per line on stdin. Output: one JSON object per line on
// stdout, in the same order, with the fields of tests/fixtures/image-refs.jsonl.
//
// It is the live oracle of the differential tests (tests/reference_oracle.rs); built by
// scripts/cluster-tools into target/tools/bin/reforacle.
package main

import (
	"bufio"
	// go-digest accepts an algorithm only when its hash is linked in; the kubelet and
	// containerd link both, so must the oracle (without them every digest is
	// "unsupported digest algorithm").
	_ "crypto/sha256"
	_ "crypto/sha512"
	"encoding/json"
	"fmt"
	"os"

	"github.com/distribution/reference"
)

type answer struct {
	Input         string  `json:"input"`
	Valid         bool    `json:"valid"`
	Error         *string `json:"error"`
	Named         *string `json:"named"`
	Domain        *string `json:"domain"`
	Path          *string `json:"path"`
	Tag           *string `json:"tag"`
	Digest        *string `json:"digest"`
	Normalized    *string `json:"normalized"`
	FamiliarNamed *string `json:"familiar_named"`
}

func ptr(s string) *string { return &s }

func read(input string) answer {
	out := answer{Input: input}
	named, err := reference.ParseNormalizedNamed(input)
	if err != nil {
		out.Error = ptr(err.Error())
		return out
	}
	out.Valid = true
	out.Named = ptr(named.String())
	out.Domain = ptr(reference.Domain(named))
	out.Path = ptr(reference.Path(named))
	out.Tag, out.Digest = ptr(""), ptr("")
	if tagged, ok := named.(reference.Tagged); ok {
		out.Tag = ptr(tagged.Tag())
	}
	if digested, ok := named.(reference.Digested); ok {
		out.Digest = ptr(digested.Digest().String())
	}
	if docker, err := reference.ParseDockerRef(input); err == nil {
		out.Normalized = ptr(docker.String())
	}
	out.FamiliarNamed = ptr(reference.FamiliarString(named))
	return out
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := bufio.NewWriterSize(os.Stdout, 1<<16)
	enc := json.NewEncoder(out)
	enc.SetEscapeHTML(false)
	line := 0
	for in.Scan() {
		line++
		var input string
		if err := json.Unmarshal(in.Bytes(), &input); err != nil {
			fmt.Fprintf(os.Stderr, "reforacle: line %d is not a JSON string: %v\n", line, err)
			os.Exit(2)
		}
		if err := enc.Encode(read(input)); err != nil {
			fmt.Fprintf(os.Stderr, "reforacle: %v\n", err)
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "reforacle: reading stdin: %v\n", err)
		os.Exit(1)
	}
	if err := out.Flush(); err != nil {
		fmt.Fprintf(os.Stderr, "reforacle: %v\n", err)
		os.Exit(1)
	}
}
