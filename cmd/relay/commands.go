package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/pairrelay/relay/core"
	"github.com/pairrelay/relay/internal/docgen"
)

// command is one relay subcommand. Its flags are declared in one place, so
// that `relay help CMD`, `relay CMD --help` and a wrong flag all print the
// same list.
type command struct {
	name     string
	synopsis string // what follows "relay NAME" in usage lines
	summary  string // one line, for the list of commands
	about    string // a paragraph for relay help NAME; empty: summary
	// setup declares the command's flags on fs and returns what runs the
	// command once they are parsed, with the arguments left after them.
	setup func(fs *flag.FlagSet, out outputs) func(ctx context.Context, args []string) error
}

// outputs are where a command writes: results to stdout, logs to stderr.
type outputs struct{ stdout, stderr io.Writer }

// commands lists every subcommand in the order relay help shows them. A new
// command is one more entry here.
var commands []*command

func init() {
	commands = []*command{
		serveCommand,
		checkCommand,
		testCommand,
		typesCommand,
		pluginCommand,
		{
			name:     "handlers",
			synopsis: "",
			summary:  "list the handlers routes can use",
			setup: func(fs *flag.FlagSet, out outputs) func(context.Context, []string) error {
				return func(_ context.Context, args []string) error {
					if err := noArgs(args); err != nil {
						return err
					}
					for _, spec := range core.HandlerSpecs() {
						fmt.Fprintf(out.stdout, "%-12s %s\n", spec.Name, spec.Summary)
					}
					return nil
				}
			},
		},
		{
			name:     "docs",
			synopsis: "-o DIR",
			summary:  "write the reference docs and relay.schema.json from the code under DIR",
			about: "Writes docs/config.md, docs/handlers/*.md and relay.schema.json under DIR, the root of a\n" +
				"relay checkout (`relay docs -o .` in the repository root, as `make docs` does). It changes\n" +
				"only files that differ, removes handler pages no handler produces any more, and lists what\n" +
				"it changed.",
			setup: func(fs *flag.FlagSet, out outputs) func(context.Context, []string) error {
				dir := fs.String("o", "", "`DIR` to write docs/ and relay.schema.json under, the repository root (required)")
				return func(_ context.Context, args []string) error {
					if err := noArgs(args); err != nil {
						return err
					}
					if *dir == "" {
						// Writing a dozen files into whatever the current
						// directory is would surprise; the user names it.
						return usageErr("docs: name the directory to write into with -o DIR (the repository root: relay docs -o .)")
					}
					return docgen.Run(*dir, out.stdout, core.HandlerSpecs())
				}
			},
		},
		{
			name:    "version",
			summary: "print the version (also relay --version)",
			setup: func(fs *flag.FlagSet, out outputs) func(context.Context, []string) error {
				return func(_ context.Context, args []string) error {
					if err := noArgs(args); err != nil {
						return err
					}
					fmt.Fprintln(out.stdout, "relay", versionString())
					return nil
				}
			},
		},
		{
			name:     "help",
			synopsis: "[COMMAND]",
			summary:  "list the commands, or print one command's usage and flags",
			setup: func(fs *flag.FlagSet, out outputs) func(context.Context, []string) error {
				return func(_ context.Context, args []string) error {
					switch len(args) {
					case 0:
						printUsage(out.stdout)
						return nil
					case 1:
						c := lookupCommand(args[0])
						if c == nil {
							printUsage(out.stderr)
							return usageErr(fmt.Sprintf("help: unknown command %q", args[0]))
						}
						printHelp(out.stdout, c)
						return nil
					}
					return usageErr("help: one command at most")
				}
			},
		},
	}
}

func lookupCommand(name string) *command {
	for _, c := range commands {
		if c.name == name {
			return c
		}
	}
	return nil
}

// Run executes one relay command; it returns when the command is done or,
// for serve, when ctx is cancelled and the graceful shutdown has finished.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	out := outputs{stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		printUsage(stderr)
		return usageErr("no command given")
	}
	switch args[0] {
	case "-h", "-help", "--help":
		printUsage(stdout)
		return nil
	case "-version", "--version":
		args = []string{"version"}
	}
	c := lookupCommand(args[0])
	if c == nil {
		printUsage(stderr)
		return usageErr(fmt.Sprintf("unknown command %q", args[0]))
	}
	fs := newFlagSet(c)
	run := c.setup(fs, out)
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printHelp(stdout, c)
			return nil
		}
		printHelp(stderr, c)
		return usageErr(fmt.Sprintf("%s: %v", c.name, err))
	}
	return run(ctx, fs.Args())
}

func newFlagSet(c *command) *flag.FlagSet {
	fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
	// Errors are returned and help is printed by Run, to the right stream.
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

func printUsage(w io.Writer) {
	fmt.Fprint(w, "usage: relay <command> [flags]\n\ncommands:\n")
	for _, c := range commands {
		line := c.name
		if c.synopsis != "" {
			line += " " + c.synopsis
		}
		fmt.Fprintf(w, "  %-34s %s\n", line, c.summary)
	}
	fmt.Fprint(w, "\nrelay help COMMAND (or relay COMMAND --help) prints a command's flags.\n")
}

// printHelp prints one command's usage, description and flags.
func printHelp(w io.Writer, c *command) {
	fmt.Fprintf(w, "usage: relay %s", c.name)
	if c.synopsis != "" {
		fmt.Fprint(w, " "+c.synopsis)
	}
	about := c.about
	if about == "" {
		about = strings.ToUpper(c.summary[:1]) + c.summary[1:] + "."
	}
	fmt.Fprintf(w, "\n\n%s\n", about)
	fs := newFlagSet(c)
	c.setup(fs, outputs{stdout: io.Discard, stderr: io.Discard})
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		return
	}
	fmt.Fprint(w, "\nflags:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

func noArgs(args []string) error {
	if len(args) > 0 {
		return usageErr(fmt.Sprintf("unexpected arguments %q", args))
	}
	return nil
}

// exitError is an error with its own exit status: 2 for a command used
// wrongly, as most tools do; 1 (any other error) for a command that ran and
// failed.
type exitError struct {
	err  error
	code int
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(msg string) error { return &exitError{err: errors.New(msg), code: 2} }

// exitCode is the process's exit status for what Run returned.
func exitCode(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	if err != nil {
		return 1
	}
	return 0
}
