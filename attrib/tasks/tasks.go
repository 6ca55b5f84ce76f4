// Package tasks holds the diagnostic attribution sets tiller ships (see README.md), compiled into
// the binary so that `tiller attribute --pairs joy` works anywhere.
package tasks

import (
	"embed"
	"slices"
)

//go:embed *.jsonl
var files embed.FS

// Names are the shipped sets: NAME.jsonl.
var Names = []string{"joy", "trust", "sadness", "anger"}

// File returns a shipped set by name, and the name of the file it is, for messages
// ("attrib/tasks/joy.jsonl").
func File(name string) (data []byte, file string, ok bool) {
	if !slices.Contains(Names, name) {
		return nil, "", false
	}
	b, err := files.ReadFile(name + ".jsonl")
	if err != nil {
		panic("tasks: shipped file missing: " + name + ".jsonl")
	}
	return b, "attrib/tasks/" + name + ".jsonl", true
}
