package train

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/dimtorch/dimtorch/datasets"
	"github.com/dimtorch/dimtorch/internal/atomicfile"
	"github.com/dimtorch/dimtorch/models"
	"github.com/dimtorch/dimtorch/objectives"
	"go.yaml.in/yaml/v3"
)

// A run's configuration is declared once, on the fields of Config (and of
// the encoder's, the method's and DIM's settings it holds), by struct tags:
//
//	flag:"lr"             the setting's one name: the flag of `dimtorch train`, the
//	                      key in config.yaml, --config files and checkpoint.json
//	help:"..."            the flag's help
//	default:"1e-4"        its default (absent: the type's zero)
//	defaulttext:"..."     what --help shows as the default when it is derived
//	choices:"encoders"    --help lists the valid values (see choiceLists)
//	methods:"vae,aae"     the --method values that use it (absent: every method)
//	change:"resume,ranks" an execution setting that may change when a run
//	                      resumes, and/or may differ between the ranks of a job
//	category:"..."        a heading of its own in --help
//
// Settings walks those tags; the command line's flags, config.yaml, the
// checkpoint's record, resume's refusals and the ranks' agreement check are
// all made from it, so a new setting is one tagged field.

// Setting is one declared setting of a Config, bound to a field of one
// Config value.
type Setting struct {
	Name        string   // flag and key
	Help        string   // the flag's help, with its choices
	Default     string   // the declared default, as text ("" for the type's zero)
	DefaultText string   // --help's text for a derived default
	Methods     []string // the methods that use it (nil: all)
	Category    string   // --help heading ("" for the methods' or none)
	// Recipe: part of what a step computes (Config.Recipe): the ranks of a
	// job must agree on it and a resumed run cannot change it.
	Recipe bool
	// Resumable: an execution setting a resumed run may change.
	Resumable bool
	// PerRank: an execution setting that may differ between the ranks.
	PerRank bool
	// Legacy is the setting's dotted JSON path in checkpoints written before
	// the configuration was keyed by flag names (dimtorch before 2026-12-03).
	Legacy string
	field  reflect.Value
}

// Kind is the setting's Go type: string, int, float64, bool or uint64.
func (s Setting) Kind() reflect.Kind { return s.field.Kind() }

// Value is the setting's value in its Config.
func (s Setting) Value() any { return s.field.Interface() }

// Set stores v (of the setting's Kind, or text to parse) in its Config.
func (s Setting) Set(v any) error {
	if t, ok := v.(string); ok && s.Kind() != reflect.String {
		return s.Parse(t)
	}
	rv := reflect.ValueOf(v)
	if !rv.IsValid() || !rv.Type().ConvertibleTo(s.field.Type()) || rv.Kind() != s.Kind() {
		return fmt.Errorf("%s: want a %s, got %T", s.Name, s.Kind(), v)
	}
	s.field.Set(rv.Convert(s.field.Type()))
	return nil
}

// Parse sets the setting from text, as a flag would.
func (s Setting) Parse(text string) error {
	switch s.Kind() {
	case reflect.String:
		s.field.SetString(text)
	case reflect.Int:
		v, err := strconv.ParseInt(text, 0, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not an integer", s.Name, text)
		}
		s.field.SetInt(v)
	case reflect.Uint64:
		v, err := strconv.ParseUint(text, 0, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not a non-negative integer", s.Name, text)
		}
		s.field.SetUint(v)
	case reflect.Float64:
		v, err := strconv.ParseFloat(text, 64)
		if err != nil {
			return fmt.Errorf("%s: %q is not a number", s.Name, text)
		}
		s.field.SetFloat(v)
	case reflect.Bool:
		v, err := strconv.ParseBool(text)
		if err != nil {
			return fmt.Errorf("%s: %q is not true or false", s.Name, text)
		}
		s.field.SetBool(v)
	default:
		return fmt.Errorf("internal: setting %s has type %s", s.Name, s.field.Type())
	}
	return nil
}

// UsedBy reports whether the method uses the setting.
func (s Setting) UsedBy(method string) bool {
	return s.Methods == nil || slices.Contains(s.Methods, method)
}

// choiceLists are the lists a `choices` tag may name.
var choiceLists = map[string]func() []string{
	"encoders":   models.Names,
	"estimators": objectives.Estimators,
	"methods":    objectives.MethodHelp,
	"policies":   datasets.PolicyHelp,
}

// Settings returns c's settings in declaration order, bound to c's fields.
func (c *Config) Settings() []Setting {
	var out []Setting
	walkSettings(reflect.ValueOf(&c.Recipe).Elem(), true, "", &out)
	walkSettings(reflect.ValueOf(&c.Execution).Elem(), false, "", &out)
	return out
}

// walkSettings appends the tagged fields of the struct v; a field without a
// flag tag that is a struct holds more settings.
func walkSettings(v reflect.Value, recipe bool, legacy string, out *[]Setting) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		js := strings.Split(f.Tag.Get("json"), ",")[0]
		name := f.Tag.Get("flag")
		if name == "" {
			if f.Type.Kind() != reflect.Struct {
				panic(fmt.Sprintf("train: field %s.%s declares no flag", t, f.Name))
			}
			walkSettings(v.Field(i), recipe, legacy+js+".", out)
			continue
		}
		s := Setting{Name: name, Help: f.Tag.Get("help"), Default: f.Tag.Get("default"), DefaultText: f.Tag.Get("defaulttext"),
			Category: f.Tag.Get("category"), Recipe: recipe, Legacy: legacy + js, field: v.Field(i)}
		if m := f.Tag.Get("methods"); m != "" {
			s.Methods = strings.Split(m, ",")
		}
		if ch := f.Tag.Get("choices"); ch != "" {
			list, ok := choiceLists[ch]
			if !ok {
				panic(fmt.Sprintf("train: setting %s names unknown choices %q", name, ch))
			}
			sep := ", "
			if strings.Contains(strings.Join(list(), ""), ": ") {
				sep = "; " // entries with descriptions
			}
			s.Help += " (one of: " + strings.Join(list(), sep) + ")"
		}
		for _, ch := range strings.Split(f.Tag.Get("change"), ",") {
			switch ch {
			case "resume":
				s.Resumable = true
			case "ranks":
				s.PerRank = true
			case "":
			default:
				panic(fmt.Sprintf("train: setting %s: unknown change %q", name, ch))
			}
		}
		if recipe && (s.Resumable || s.PerRank) {
			panic(fmt.Sprintf("train: recipe setting %s cannot change on resume or between ranks", name))
		}
		*out = append(*out, s)
	}
}

// setting returns c's setting of that name.
func (c *Config) setting(name string) (Setting, bool) {
	for _, s := range c.Settings() {
		if s.Name == name {
			return s, true
		}
	}
	return Setting{}, false
}

// Defaults returns the declared defaults: the original's hyperparameters
// (Adam 1e-4, betas 0.5 and 0.999, batch 64) with a CPU-sized 256 MI
// units, DIM(L) with JSD and the mode's weights.
func Defaults() Config {
	var c Config
	for _, s := range c.Settings() {
		if s.Default != "" {
			if err := s.Parse(s.Default); err != nil {
				panic("train: default of " + err.Error())
			}
		}
	}
	c.Objective.Alpha, c.Objective.Beta, c.Objective.Gamma = objectives.DefaultWeights(c.Objective.Mode)
	return c
}

// Resumable names the settings a resumed run may change.
func Resumable() []string {
	var c Config
	var out []string
	for _, s := range c.Settings() {
		if s.Resumable {
			out = append(out, s.Name)
		}
	}
	return out
}

// NewConfig is the configuration of a new run: the defaults with the named
// settings set (values of the settings' kinds, or text), the method's own
// defaults (objectives.MethodInfo.Defaults) for those it declares and that
// are not named, and the mode's weights for those of alpha, beta and gamma
// not named. A setting the
// method does not use is refused by name.
func NewConfig(values map[string]any) (Config, error) {
	c := Defaults()
	names := make([]string, 0, len(values))
	for n := range values {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		s, ok := c.setting(n)
		if !ok {
			return c, fmt.Errorf("unknown setting %q", n)
		}
		if err := s.Set(values[n]); err != nil {
			return c, err
		}
	}
	if m, err := objectives.Lookup(c.Method.Name); err == nil {
		for n, v := range m.Defaults {
			if _, set := values[n]; set {
				continue
			}
			s, ok := c.setting(n)
			if !ok {
				return c, fmt.Errorf("method %s: a default for unknown setting %q", m.Name, n)
			}
			if err := s.Parse(v); err != nil {
				return c, fmt.Errorf("method %s's default: %w", m.Name, err)
			}
		}
	}
	var unused []string
	for _, s := range c.Settings() {
		if _, set := values[s.Name]; set && !s.UsedBy(c.Method.Name) {
			unused = append(unused, fmt.Sprintf("--%s (a setting of --method %s)", s.Name, strings.Join(s.Methods, " or ")))
		}
	}
	if len(unused) > 0 {
		return c, fmt.Errorf("method %s does not use %s", c.Method.Name, strings.Join(unused, ", "))
	}
	a, b, g := objectives.DefaultWeights(c.Objective.Mode)
	for n, w := range map[string]struct {
		v   *float64
		def float64
	}{"alpha": {&c.Objective.Alpha, a}, "beta": {&c.Objective.Beta, b}, "gamma": {&c.Objective.Gamma, g}} {
		if _, set := values[n]; !set {
			*w.v = w.def
		}
	}
	return c, c.Validate()
}

// derive sets what follows from other settings of a new run: the
// augmentation policy "auto" becomes resized-crops with --crop-scale, crops
// with several views (identical views would teach nothing a single view
// does not), none otherwise; the values of --augment before it named
// policies become what they meant: true crops (resized-crops with
// --crop-scale), false none (older runs derived true for several views).
func (c *Config) derive() {
	switch c.Augment {
	case "auto", "":
		switch {
		case c.CropScale > 0:
			c.Augment = "resized-crops"
		case c.Objective.Views > 1:
			c.Augment = "crops"
		default:
			c.Augment = "none"
		}
	default:
		c.legacyAugment()
	}
}

// legacyAugment reads the values of --augment from before it named
// policies as what they meant.
func (c *Config) legacyAugment() {
	switch c.Augment {
	case "false":
		c.Augment = "none"
	case "true":
		c.Augment = "crops"
		if c.CropScale > 0 {
			c.Augment = "resized-crops"
		}
	}
}

// Resumed is the configuration a resumed run continues with: the saved
// one with the named settings applied. A setting whose value differs from
// the run's is applied when it is Resumable and refused otherwise, each
// refusal named with both values, so that a resumed run never silently
// ignores one.
func Resumed(saved Config, values map[string]any, runDir string) (Config, error) {
	next := saved
	var differ []string
	for _, s := range saved.Settings() {
		v, set := values[s.Name]
		if !set {
			continue
		}
		tmp := saved
		ts, _ := tmp.setting(s.Name)
		if err := ts.Set(v); err != nil {
			return saved, err
		}
		if ts.Value() == s.Value() {
			continue
		}
		if s.Resumable {
			ns, _ := next.setting(s.Name)
			_ = ns.Set(v)
			continue
		}
		differ = append(differ, fmt.Sprintf("--%s %v (the run's: %v)", s.Name, ts.Value(), s.Value()))
	}
	if len(differ) > 0 {
		return saved, fmt.Errorf("--resume continues a run with the settings it started with, and these flags differ from them: %s. "+
			"Leave them out to continue the run (only --%s may change), or start a new run with them: --config %s --out NEW_DIR",
			strings.Join(differ, ", "), strings.Join(Resumable(), ", --"), filepath.Join(runDir, ConfigFile))
	}
	return next, next.Validate()
}

// unresumable lists the settings other than the Resumable ones that differ
// between was and now.
func unresumable(was, now Config) []string {
	a, b := was.Settings(), now.Settings()
	var bad []string
	for i, s := range a {
		if !s.Resumable && s.Value() != b[i].Value() {
			bad = append(bad, fmt.Sprintf("%s %v -> %v", s.Name, s.Value(), b[i].Value()))
		}
	}
	sort.Strings(bad)
	return bad
}

// rankFields are the values the ranks of a job must agree on: every
// setting but the PerRank ones.
func rankFields(c Config) map[string]any {
	out := map[string]any{}
	for _, s := range c.Settings() {
		if !s.PerRank {
			out[s.Name] = s.Value()
		}
	}
	return out
}

// MarshalJSON writes the configuration as one flat object keyed by the
// settings' names, every setting included.
func (c Config) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	b.WriteByte('{')
	for i, s := range c.Settings() {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(s.Name)
		v, err := json.Marshal(s.Value())
		if err != nil {
			return nil, fmt.Errorf("setting %s: %w", s.Name, err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return []byte(b.String()), nil
}

// plainConfig is Config without its JSON methods: the nested form of the
// checkpoints from before the flat one, read through the json tags.
type plainConfig Config

// UnmarshalJSON reads a configuration: the flat form keyed by setting
// names, or the nested form of older checkpoints. Settings the file does
// not name keep their defaults, except channels-last, which checkpoints
// from before it existed trained without. This is the one place where old
// configurations are brought up to date.
func (c *Config) UnmarshalJSON(b []byte) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*c = Defaults()
	// --augment was a switch before it named a policy: true and false are
	// read as text, which derive resolves as they meant.
	if v, ok := m["augment"]; ok && (string(v) == "true" || string(v) == "false") {
		m["augment"] = json.RawMessage(`"` + string(v) + `"`)
		var err error
		if b, err = json.Marshal(m); err != nil {
			return err
		}
	}
	legacy := false
	for _, k := range []string{"encoder", "method", "objective"} {
		if v, ok := m[k]; ok && len(v) > 0 && v[0] == '{' {
			legacy = true
		}
	}
	if legacy {
		if _, ok := m["channels_last"]; !ok {
			c.ChannelsLast = false
		}
		if err := json.Unmarshal(b, (*plainConfig)(c)); err != nil {
			return err
		}
		c.legacyAugment()
		// The settings that older checkpoints wrote as zero for "the
		// default" (their Validate filled them in).
		d := Defaults()
		for _, n := range []string{"method", "likelihood", "cpc-rows", "scorer", "views", "lr-schedule", "workers"} {
			s, _ := c.setting(n)
			if s.field.IsZero() {
				ds, _ := d.setting(n)
				s.field.Set(ds.field)
			}
		}
		return nil
	}
	for k, v := range m {
		s, ok := c.setting(k)
		if !ok {
			return fmt.Errorf("unknown setting %q", k)
		}
		if err := json.Unmarshal(v, s.field.Addr().Interface()); err != nil {
			return fmt.Errorf("setting %s: %w", k, err)
		}
	}
	c.legacyAugment()
	return nil
}

// ConfigFile is the run's configuration in a run directory: every setting
// the run's method uses, by name, in the form --config reads, so that
// `dimtorch train --config RUN/config.yaml --out NEW` repeats the run.
const ConfigFile = "config.yaml"

// ConfigYAML is the configuration as ConfigFile holds it.
func ConfigYAML(c Config, run string, world int) ([]byte, error) {
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# The settings of the run in this directory (dimtorch %s), as flags of dimtorch train.\n", Version)
	fmt.Fprintf(&buf, "# Repeat it: dimtorch train --config %s --out NEW_DIR\n", filepath.Join(run, ConfigFile))
	if world > 1 {
		fmt.Fprintf(&buf, "# It was trained by %d processes: repeat it with as many (--nproc-per-node, --nnodes or torchrun).\n", world)
	}
	for _, s := range c.Settings() {
		if !s.UsedBy(c.Method.Name) {
			continue // a setting of another method
		}
		v, err := yaml.Marshal(s.Value())
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&buf, "%s: %s", s.Name, v)
	}
	return buf.Bytes(), nil
}

func writeConfigFile(run string, c Config, world int) error {
	b, err := ConfigYAML(c, run, world)
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(filepath.Join(run, ConfigFile), b, 0o644)
}
