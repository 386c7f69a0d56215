package train

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// leafFields lists the dotted Go paths of every non-struct field of v's
// type, found by walking the struct itself (not through Settings).
func leafFields(t reflect.Type, prefix string, out *[]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if f.Type.Kind() == reflect.Struct {
			leafFields(f.Type, prefix+f.Name+".", out)
			continue
		}
		*out = append(*out, prefix+f.Name)
	}
}

// changed returns a value of s's kind other than v.
func changed(v any) any {
	switch v := v.(type) {
	case string:
		return v + "-changed"
	case int:
		return v + 2
	case float64:
		return v + 0.25
	case bool:
		return !v
	case uint64:
		return v + 5
	}
	panic(fmt.Sprintf("no changed value for %T", v))
}

// Every field of the configuration is a declared setting with a unique
// name, a help text and (where the type's zero is not what a run uses) a
// default; recipe settings never change on resume or between ranks.
func TestEveryFieldIsASetting(t *testing.T) {
	var leaves []string
	leafFields(reflect.TypeOf(Config{}), "", &leaves)
	c := Defaults()
	ss := c.Settings()
	if len(ss) != len(leaves) {
		t.Fatalf("%d fields but %d settings: every field must declare a flag (fields: %v)", len(leaves), len(ss), leaves)
	}
	seen := map[string]bool{}
	for _, s := range ss {
		if seen[s.Name] {
			t.Errorf("setting %s is declared twice", s.Name)
		}
		seen[s.Name] = true
		if strings.TrimSpace(s.Help) == "" {
			t.Errorf("setting %s has no help", s.Name)
		}
		if s.Recipe && (s.Resumable || s.PerRank) {
			t.Errorf("recipe setting %s may change", s.Name)
		}
		if s.Legacy == "" {
			t.Errorf("setting %s has no JSON name for older checkpoints", s.Name)
		}
	}
	// The declared split: what a step computes is the recipe.
	for _, name := range []string{"data", "encoder", "method", "mode", "lr", "batch-size", "seed", "sync-bn", "global-negatives", "views"} {
		if s, ok := c.setting(name); !ok || !s.Recipe {
			t.Errorf("%s should be a recipe setting", name)
		}
	}
	for _, name := range []string{"epochs", "threads", "workers", "log-every", "data-dir", "device", "bf16"} {
		if s, ok := c.setting(name); !ok || s.Recipe {
			t.Errorf("%s should be an execution setting", name)
		}
	}
	if got := strings.Join(Resumable(), " "); got != "epochs data-dir threads workers skip-corrupt log-every" {
		t.Errorf("resumable: %s", got)
	}
}

// Each setting, changed from its default, survives the checkpoint's record
// (JSON) and appears in config.yaml when the method uses it; a resumed run
// accepts the change exactly when the setting is declared resumable and
// refuses it naming the flag otherwise; the ranks compare it unless it is
// declared per rank.
func TestEverySettingIsSavedResumedAndCompared(t *testing.T) {
	saved := Defaults()
	for _, s := range saved.Settings() {
		t.Run(s.Name, func(t *testing.T) {
			c := Defaults()
			cs, _ := c.setting(s.Name)
			v := changed(cs.Value())
			if err := cs.Set(v); err != nil {
				t.Fatal(err)
			}
			// Saved: checkpoint.json's form.
			b, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			var back Config
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, c) {
				t.Fatalf("JSON round trip lost %s: %+v", s.Name, back)
			}
			// Saved: config.yaml, under the method that uses it.
			if s.Methods != nil {
				c.Method.Name = s.Methods[0]
			}
			y, err := ConfigYAML(c, "RUN", 1)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(y), "\n"+s.Name+": ") {
				t.Fatalf("config.yaml has no %s:\n%s", s.Name, y)
			}
			// Resumed.
			next, err := Resumed(saved, map[string]any{s.Name: v}, "RUN")
			if s.Resumable {
				ns, _ := next.setting(s.Name)
				if err != nil || ns.Value() != v {
					t.Fatalf("a resumable setting was refused or not applied: %v (value %v)", err, ns.Value())
				}
				if bad := unresumable(saved, next); len(bad) != 0 {
					t.Fatalf("train.Resume would refuse it: %v", bad)
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), "--"+s.Name+" ") {
					t.Fatalf("a fixed setting was not refused by name: %v", err)
				}
				if bad := unresumable(saved, c); len(bad) == 0 {
					t.Fatalf("train.Resume's own check misses it")
				}
			}
			// Compared across ranks.
			a, z := rankFields(saved), rankFields(c)
			_, compared := a[s.Name]
			if compared == s.PerRank {
				t.Fatalf("compared across ranks: %v, declared per rank: %v", compared, s.PerRank)
			}
			if compared && reflect.DeepEqual(a[s.Name], z[s.Name]) {
				t.Fatalf("the ranks' check does not see the change")
			}
		})
	}
}

// A configuration made from settings refuses another method's settings by
// name, fills the mode's weights for those not given, and leaves the given
// ones; Validate changes nothing.
func TestNewConfig(t *testing.T) {
	if _, err := NewConfig(map[string]any{"method": "vae", "mi-units": 64}); err == nil || !strings.Contains(err.Error(), "--mi-units (a setting of --method dim or amdim)") {
		t.Fatalf("another method's setting: %v", err)
	}
	c, err := NewConfig(map[string]any{"mode": "global", "gamma": 0.0})
	if err != nil {
		t.Fatal(err)
	}
	if c.Objective.Alpha != 1 || c.Objective.Beta != 0 || c.Objective.Gamma != 0 {
		t.Fatalf("mode weights: %+v", c.Objective)
	}
	if _, err := NewConfig(map[string]any{"lr": "fast"}); err == nil || !strings.Contains(err.Error(), `"fast" is not a number`) {
		t.Fatalf("bad text: %v", err)
	}
	if _, err := NewConfig(map[string]any{"learning-rate": 1.0}); err == nil {
		t.Fatal("an unknown setting was accepted")
	}
	before := c
	if err := c.Validate(); err != nil || !reflect.DeepEqual(before, c) {
		t.Fatalf("Validate changed the configuration or failed: %v", err)
	}
	// A method's own defaults apply where the run does not name the setting.
	a, err := NewConfig(map[string]any{"method": "amdim", "views": 3})
	if err != nil {
		t.Fatal(err)
	}
	if a.Objective.Views != 3 || a.Objective.ScoreClip != 10 || a.Encoder.Name != "amdim28" || a.Augment != "amdim" || a.Method.AMDIMPairs != "1-7,1-5,5-5" {
		t.Fatalf("amdim's defaults: %+v", a.Recipe)
	}
	if d, err := NewConfig(map[string]any{"views": 2}); err != nil || d.Objective.ScoreClip != 0 || d.Augment != "auto" {
		t.Fatalf("dim keeps the declared defaults: %+v (%v)", d.Recipe, err)
	}
	if _, err := NewConfig(map[string]any{"augment": "crops", "crop-scale": 0.5}); err == nil || !strings.Contains(err.Error(), "--augment crops has none") {
		t.Fatalf("--crop-scale with crops: %v", err)
	}
}

// "auto" augmentation resolves by the other settings when a run starts.
func TestAugmentDerived(t *testing.T) {
	for _, c := range []struct {
		augment string
		views   int
		scale   float64
		want    string
	}{{"auto", 1, 0, "none"}, {"auto", 2, 0, "crops"}, {"auto", 2, 0.4, "resized-crops"}, {"auto", 1, 0.4, "resized-crops"},
		{"amdim", 2, 0, "amdim"}, {"none", 2, 0, "none"}, {"true", 1, 0, "crops"}, {"false", 1, 0, "none"}} {
		cfg := Defaults()
		cfg.Augment, cfg.Objective.Views, cfg.CropScale = c.augment, c.views, c.scale
		cfg.derive()
		if cfg.Augment != c.want {
			t.Errorf("%s with %d views and crop-scale %v: %s, want %s", c.augment, c.views, c.scale, cfg.Augment, c.want)
		}
	}
}

// Checkpoints written before the flat record keep loading: the nested JSON
// of 2026-11 with its zero "defaults", and no channels_last (trained NCHW).
func TestLegacyConfigMigrates(t *testing.T) {
	old := `{"data":"fashion-mnist","limit":0,"augment":false,"encoder":{"name":"basic28","in_channels":1,"y_dim":64},
	"method":{"name":""},"objective":{"mode":"local","estimator":"jsd","scorer":"","alpha":0,"beta":1,"gamma":0.1,"mi_units":256,
	"coord_weight":0.5,"occlusion":false,"occlusion_size":0,"gp_weight":0},"batch_size":64,"epochs":3,"lr":0.0001,"beta1":0,
	"beta2":0.999,"seed":7,"threads":2,"device":"cpu","workers":0,"bf16":false,"probe_lr":0.001,"log_every":20}`
	var c Config
	if err := json.Unmarshal([]byte(old), &c); err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Encoder.InChannels, want.Objective.CoordWeight, want.Objective.GPWeight, want.Epochs, want.Beta1, want.Seed = 1, 0.5, 0, 3, 0, 7
	want.ChannelsLast = false
	want.Augment = "none" // "augment": false
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("migrated:\n%+v\nwant\n%+v", c, want)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	// --augment was a switch: its records name the policy it ran.
	for rec, want := range map[string]string{`{"augment": true}`: "crops", `{"augment": true, "crop-scale": 0.4}`: "resized-crops",
		`{"augment": false}`: "none", `{"augment": "amdim"}`: "amdim"} {
		var c Config
		if err := json.Unmarshal([]byte(rec), &c); err != nil || c.Augment != want {
			t.Errorf("%s: augment %q (%v), want %q", rec, c.Augment, err, want)
		}
	}
	if err := json.Unmarshal([]byte(`{"lr": 0.1, "warp": 9}`), &c); err == nil || !strings.Contains(err.Error(), `"warp"`) {
		t.Fatalf("an unknown setting in a record: %v", err)
	}
}

// A metrics record keeps every declared loss part under its key, in the
// form older runs wrote (flat beside the fixed fields), and reads it back.
func TestRecordTermsRoundTrip(t *testing.T) {
	old := `{"kind":"step","epoch":0,"step":20,"loss":1.5,"local":-0.5,"prior":0.7,"d_loss":1.3,"grad_penalty":0.01,"images_per_sec":900}`
	var r Record
	if err := json.Unmarshal([]byte(old), &r); err != nil {
		t.Fatal(err)
	}
	if len(r.Terms) != 4 || *r.Term("local") != -0.5 || *r.Term("grad_penalty") != 0.01 || r.Term("kl") != nil {
		t.Fatalf("terms %v", r.Terms)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var got, want map[string]any
	_ = json.Unmarshal(b, &got)
	_ = json.Unmarshal([]byte(old), &want)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("re-encoded:\n%s\nwant\n%s", b, old)
	}
}
