package main

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
	"go.yaml.in/yaml/v3"
)

// Configuration files. `--config FILE` reads a YAML mapping from flag names
// to values, as if each were given on the command line; flags given on the
// command line win. Every run directory keeps its resolved configuration in
// config.yaml, in the same form, so `train --config RUN/config.yaml --out
// NEW` repeats a run.

func configFlag() cli.Flag {
	return &cli.StringFlag{Name: "config", Usage: "YAML file of flag values (name: value, as in a run's config.yaml); flags on the command line override it"}
}

// applyConfigFile sets every flag named in --config's file that the command
// line did not set. An unknown name, a value the flag does not accept or a
// file that is not a YAML mapping of single values is an error naming the
// file and line.
func applyConfigFile(c *cli.Context) error {
	path := c.String("config")
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("--config %s: not YAML: %v", path, err)
	}
	if len(doc.Content) == 0 {
		return nil // an empty file
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return fmt.Errorf("--config %s:%d: want a mapping of flag names to values (lr: 0.0001)", path, m.Line)
	}
	known := map[string]cli.Flag{}
	for _, f := range c.Command.Flags {
		for _, n := range f.Names() {
			known[n] = f
		}
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		name := k.Value
		where := fmt.Sprintf("--config %s:%d", path, k.Line)
		if name == "config" {
			return fmt.Errorf("%s: a configuration file cannot name another (config)", where)
		}
		if _, ok := known[name]; !ok {
			return fmt.Errorf("%s: %q is not a flag of %s%s", where, name, c.Command.Name, suggest(name, known))
		}
		if seen[name] {
			return fmt.Errorf("%s: %s is given twice", where, name)
		}
		seen[name] = true
		if v.Kind != yaml.ScalarNode || v.Tag == "!!null" {
			return fmt.Errorf("%s: %s wants a single value", where, name)
		}
		if c.IsSet(name) {
			continue // the command line wins
		}
		if err := c.Set(name, v.Value); err != nil {
			return fmt.Errorf("%s: %s: invalid value %q: %v", where, name, v.Value, err)
		}
	}
	return nil
}

// suggest names the known flag closest to a misspelt one.
func suggest(name string, known map[string]cli.Flag) string {
	best, bestD := "", 3
	for k := range known {
		if len(k) < 2 || k == "config" {
			continue // one-letter aliases (h) are no suggestion; config is not allowed
		}
		if d := editDistance(strings.ReplaceAll(name, "_", "-"), k); d < bestD || (d == bestD && k < best) {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// checkPositive reports the first of the named integer flags below 1.
func checkPositive(c *cli.Context, names ...string) error {
	for _, n := range names {
		if v := c.Int(n); v < 1 {
			return fmt.Errorf("--%s must be at least 1, got %d", n, v)
		}
	}
	return nil
}

// checkChoice reports a flag whose value is not one of choices.
func checkChoice(c *cli.Context, name string, choices ...string) error {
	v := c.String(name)
	for _, ch := range choices {
		if v == ch {
			return nil
		}
	}
	sorted := append([]string(nil), choices...)
	sort.Strings(sorted)
	return fmt.Errorf("--%s %s: want one of %s", name, strconv.Quote(v), strings.Join(sorted, ", "))
}

// positiveList reads a flag holding a comma-separated list of positive
// integers (1,8,64); what is names one item in the error.
func positiveList(c *cli.Context, name, what string) ([]int, error) {
	var out []int
	for _, s := range strings.Split(c.String(name), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--%s: %q is not %s (want a list such as 1,8,64)", name, s, what)
		}
		out = append(out, n)
	}
	return out, nil
}
