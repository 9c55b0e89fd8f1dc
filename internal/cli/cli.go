// Package cli is the command line shared by every `telemetry` subcommand:
// flags that can also be set by TELEMETRY_<FLAG> environment variables, and
// the signal handling that turns SIGINT/SIGTERM into a cancelled context.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// EnvPrefix prefixes the environment variable of every flag.
const EnvPrefix = "TELEMETRY_"

// EnvName is the environment variable that sets flag name.
func EnvName(name string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// NewFlagSet makes a flag set whose usage names the command, says what it
// does, and lists every flag with its environment variable.
func NewFlagSet(name, synopsis string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(out, "usage: telemetry %s [flags]\n\n%s\n\nFlags (each can also be set by the environment variable shown):\n", name, synopsis)
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" {
				def = fmt.Sprintf(" (default %q)", f.DefValue)
			}
			fmt.Fprintf(out, "  --%s  [%s]%s\n      %s\n", f.Name, EnvName(f.Name), def, f.Usage)
		})
	}
	return fs
}

// ErrFlagsChecked is what Parse returns, after a successful parse, while
// CheckFlagsOnly is set: the command stops there, having done nothing.
var ErrFlagsChecked = errors.New("flags checked")

// CheckFlagsOnly makes Parse stop every command right after its flags
// parsed. The compose test sets it to check that compose.yaml's commands
// are valid invocations.
var CheckFlagsOnly bool

// Parse parses args, then sets every flag not given on the command line from
// its environment variable, if present. Command-line flags win.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] {
			return
		}
		if v, ok := os.LookupEnv(EnvName(f.Name)); ok {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("environment %s=%q: %w", EnvName(f.Name), v, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if CheckFlagsOnly {
		return ErrFlagsChecked
	}
	return nil
}

// SignalContext is cancelled on SIGINT or SIGTERM. A second signal exits at
// once, for a presenter whose graceful shutdown is taking too long.
func SignalContext(log *slog.Logger) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-ch
		log.Info("shutting down; signal again to exit at once", "signal", sig.String())
		cancel()
		<-ch
		os.Exit(1)
	}()
	return ctx, func() {
		signal.Stop(ch)
		cancel()
	}
}

// Logger is the process logger: text to stderr at level.
func Logger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// SplitList splits a comma-separated flag value, dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// LogLevelFlag defines --log-level, the same for every subcommand, with
// default def; Logger takes its value.
func LogLevelFlag(fs *flag.FlagSet, def string) *string {
	return fs.String("log-level", def, "debug, info, warn or error")
}
