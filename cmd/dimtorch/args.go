package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// hoistFlags lets flags follow positional arguments, as in
// `dimtorch data info fashion-mnist --json`: urfave/cli v2 stops parsing
// flags at the first positional argument, so the flags of the command that
// will run are moved in front of its positional arguments. Everything after
// "--" is left alone.
func hoistFlags(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	rest := args[1:]
	cmds := app.Commands
	flags := app.Flags
	// Walk down the command path: global flags and command names.
	for len(rest) > 0 {
		tok := rest[0]
		if strings.HasPrefix(tok, "-") {
			n := flagArity(flags, tok)
			if n > len(rest) {
				n = len(rest)
			}
			out = append(out, rest[:n]...)
			rest = rest[n:]
			continue
		}
		cmd := findCommand(cmds, tok)
		if cmd == nil {
			break
		}
		out = append(out, tok)
		rest = rest[1:]
		cmds, flags = cmd.Subcommands, cmd.Flags
		if len(cmds) == 0 {
			break
		}
	}
	var fl, pos []string
	for i := 0; i < len(rest); i++ {
		tok := rest[i]
		if tok == "--" {
			pos = append(pos, rest[i:]...)
			break
		}
		if strings.HasPrefix(tok, "-") && tok != "-" {
			n := flagArity(flags, tok)
			fl = append(fl, rest[i:min(i+n, len(rest))]...)
			i += n - 1
			continue
		}
		pos = append(pos, tok)
	}
	return append(append(out, fl...), pos...)
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.Name == name {
			return c
		}
		for _, a := range c.Aliases {
			if a == name {
				return c
			}
		}
	}
	return nil
}

// flagArity is 1 for a boolean flag or a flag written as --name=value, 2 for
// a flag that takes the next token as its value.
func flagArity(flags []cli.Flag, tok string) int {
	name := strings.TrimLeft(tok, "-")
	if strings.Contains(name, "=") {
		return 1
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				if _, ok := f.(*cli.BoolFlag); ok {
					return 1
				}
				return 2
			}
		}
	}
	if name == "help" || name == "h" {
		return 1
	}
	return 2
}
