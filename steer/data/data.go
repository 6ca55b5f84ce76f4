// Package data holds the files tiller ships for steering: contrastive pair sets for five emotions,
// held-out neutral prompts for evaluation, and a starter emotion lexicon (see README.md). They are
// compiled into the binary, so `tiller derive --pairs joy` works anywhere.
package data

import (
	"embed"
	"slices"
)

//go:embed *.jsonl lexicon-starter.tsv
var files embed.FS

// PairSets are the names of the shipped pair sets: NAME.jsonl.
var PairSets = []string{"joy", "trust", "sadness", "anger", "fear"}

// Prompts and Lexicon name the held-out prompt set and the starter lexicon.
const (
	Prompts = "prompts"
	Lexicon = "lexicon"
)

// File returns a shipped file by name (a pair set, Prompts or Lexicon) and the name of the file it
// is, for messages ("steer/data/joy.jsonl").
func File(name string) (data []byte, file string, ok bool) {
	switch {
	case slices.Contains(PairSets, name) || name == Prompts:
		file = name + ".jsonl"
	case name == Lexicon:
		file = "lexicon-starter.tsv"
	default:
		return nil, "", false
	}
	b, err := files.ReadFile(file)
	if err != nil {
		panic("data: shipped file missing: " + file)
	}
	return b, "steer/data/" + file, true
}
