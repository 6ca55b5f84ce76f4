// Command tiller runs LLaMA-family models: generate text, score it, inspect checkpoints, write
// random-weight checkpoints at real shapes, and tokenize.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/tillerlm/tiller/llama/hub"
	"github.com/tillerlm/tiller/llama/tinychat"
)

// commands are the subcommands' entry points: each gets the arguments after its name and the
// streams to write to.
var commands = map[string]func(args []string, stdout, stderr io.Writer) error{
	"generate": runGenerate,
	"score":    runScore,
	"tokenize": runTokenize,
	"template": runTemplate,
	"inspect":  runInspect,
	"init":     runInit,
	"cache":    runCache,
	"grad":     runGrad,
	"profile":  runProfile,
	"train":    runTrain,
	"derive":   runDerive,
	"steer":    runSteer,
	"eval":     runEval,
	"serve":    runServe,
	"pull":     runPull,

	"attribute": runAttribute,
}

// summaries are the one-line descriptions `tiller --help` lists.
var summaries = map[string]string{
	"generate": "generate text from a prompt, streamed to stdout",
	"score":    "per-token log-probabilities and perplexity of a text",
	"tokenize": "token ids and pieces of a text, or of a conversation as the chat template renders it",
	"template": "the prompt a model's own chat template makes of a conversation, byte for byte",
	"inspect":  "config, parameter count and tensor table of a checkpoint",
	"init":     "write a random-weight checkpoint in Hugging Face layout",
	"cache":    "save the activations at hook points of one prompt (safetensors)",
	"grad":     "save the gradients of a metric at hook points of one prompt (safetensors)",
	"profile":  "time each kernel of a decode step on the GPU (a CUDA build: make tiller-cuda)",
	"train":    "train a LLaMA from scratch on conversations (AdamW, loss curve, HF checkpoint)",
	"derive":   "derive a steering vector from contrastive pairs (mean difference or PCA); convert to/from GGUF",
	"steer":    "generate with steering vectors added, one batch for a sweep of strengths",
	"eval":     "sweep steering strengths over held-out prompts: sentiment, emotion words, pronouns, perplexity, plot",
	"serve":    "serve the OpenAI chat-completions API with per-request steering, many requests batched together",
	"pull":     "download a model from the Hugging Face Hub into the Hugging Face cache, as huggingface_hub does",

	"attribute": "attribution patching over clean/corrupt pairs: where a behaviour is decided, and the locus to steer",
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the exit, so tests can call it: 0 on success, 1 on an error, 2 on bad usage.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "tiller: unknown command %q\n", args[0])
		usage(stderr)
		return 2
	}
	err := cmd(args[1:], stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, new(usageError)):
		fmt.Fprintf(stderr, "tiller %s: %v\n", args[0], err)
		return 2
	default:
		fmt.Fprintf(stderr, "tiller %s: %v\n", args[0], err)
		return 1
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "tiller — run, inspect and steer LLaMA-family models")
	fmt.Fprintln(w, "\nusage: tiller COMMAND [flags] [arguments]\n\ncommands:")
	names := make([]string, 0, len(summaries))
	for n := range summaries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, summaries[n])
	}
	fmt.Fprintln(w, "\n`tiller COMMAND --help` lists a command's flags.")
}

// usageError is a mistake in the command line (exit code 2), as opposed to a failure (exit code 1).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// newFlags makes a flag set whose usage text starts with the command's synopsis.
func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: tiller %s %s\n\n%s\n\nflags:\n", name, synopsis, summaries[name])
		fs.PrintDefaults()
	}
	return fs
}

// parse reads flags wherever they appear among the arguments (Go's flag package stops at the first
// argument that is not a flag) and returns the others in order. Everything after a "--" that stands
// where a flag could is an argument, never a flag: `tiller generate -- "-5 degrees"`.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var flags, positional []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			positional = append(positional, args[i+1:]...)
			i = len(args)
		case len(a) < 2 || a[0] != '-': // "-" alone is an argument (standard input)
			positional = append(positional, a)
		default:
			flags = append(flags, a)
			if takesValue(fs, a) && i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		}
	}
	if err := fs.Parse(flags); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, err
		}
		return nil, usageError{err.Error()}
	}
	return positional, nil
}

// takesValue reports whether the flag argument a ("-name" or "--name") reads the next argument as
// its value, as the flag package decides: a defined flag that is not boolean, given without "=".
func takesValue(fs *flag.FlagSet, a string) bool {
	name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
	if strings.Contains(name, "=") {
		return false
	}
	f := fs.Lookup(name)
	if f == nil {
		return false // the flag package reports it
	}
	b, isBool := f.Value.(interface{ IsBoolFlag() bool })
	return !isBool || !b.IsBoolFlag()
}

// modelFlags are the flags every command that runs a model takes.
type modelFlags struct {
	dir     string // --model, resolved by check to a folder or file
	name    string // how outputs name the model (modelName), set by check
	threads int
}

func (m *modelFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&m.dir, "model", "", modelUsage)
	fs.IntVar(&m.threads, "threads", physicalCores(), "CPU threads (default: the physical cores this process may use)")
}

// modelUsage describes --model for every command that takes it.
const modelUsage = "model: a folder in Hugging Face layout (config.json, *.safetensors, tokenizer.json), a llama GGUF file, " +
	"or ORG/NAME[@REVISION] from the Hugging Face cache (`tiller pull` fills it); empty or \"" + tinychat.ModelName + "\": the embedded tiny chat model"

func (m *modelFlags) check() error {
	var err error
	m.name = modelName(m.dir)
	if m.dir, err = modelDir(m.dir); err != nil {
		return err
	}
	if m.threads < 1 {
		return usagef("--threads %d, want >= 1", m.threads)
	}
	return nil
}

// modelDir resolves --model: a path as given when it exists; ORG/NAME[@REVISION] from the
// Hugging Face cache (HF_HUB_CACHE, HF_HOME/hub or ~/.cache/huggingface/hub), offline; the
// embedded tiny chat model for an empty value or its name, written out on first use under
// $TILLER_CACHE (default: the user's cache folder). Anything else is returned for the loader to
// report as a missing folder.
func modelDir(dir string) (string, error) {
	if dir == "" || dir == tinychat.ModelName {
		if _, err := os.Stat(dir); dir != "" && err == nil {
			return dir, nil
		}
		return tinychat.ModelDir(os.Getenv("TILLER_CACHE"))
	}
	if ref, ok := hubRef(dir); ok {
		return hub.Resolve(hub.CacheDir(), ref)
	}
	return dir, nil
}

// hubRef reads --model as ORG/NAME[@REVISION] when no file or folder of that name exists and it
// does not name a GGUF file (a missing one is then reported as a missing file).
func hubRef(arg string) (hub.Ref, bool) {
	if _, err := os.Stat(arg); err == nil || strings.HasSuffix(arg, ".gguf") {
		return hub.Ref{}, false
	}
	return hub.ParseRef(arg)
}

// modelName is how outputs (vector metadata, reports, the server's model id) name the model given
// as --model: ORG/NAME for a Hugging Face reference (not its snapshot folder), the embedded
// model's name, else the folder's or file's base name.
func modelName(arg string) string {
	if arg == "" {
		return tinychat.ModelName
	}
	if ref, ok := hubRef(arg); ok {
		return ref.Repo
	}
	return filepath.Base(filepath.Clean(arg))
}

// text joins the positional arguments into one prompt; "-" alone reads standard input.
func text(args []string, what string) (string, error) {
	if len(args) == 0 {
		return "", usagef("no %s given", what)
	}
	if len(args) == 1 && args[0] == "-" {
		b, err := io.ReadAll(os.Stdin)
		return string(b), err
	}
	return strings.Join(args, " "), nil
}

// count prints a parameter count the way model cards do: 8.03 B, 1.24 M, 950.
func count(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2f B", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2f M", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1f K", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
