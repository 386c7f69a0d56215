package objectives

import (
	"fmt"
	"strings"
)

// MethodInfo is what a training method declares about itself, in one place:
// the trainer, the command line (--method's help and which flags belong to
// it, by the methods tags on MethodConfig and DIMConfig), reports and the
// data-parallel launcher read it. A new method is an entry of registry, its
// settings as tagged fields of MethodConfig, and its file.
type MethodInfo struct {
	Name        string
	Description string // one line, for --help
	// OneProcess, when set, is why the method cannot train data-parallel.
	OneProcess string
	// MultiView: the method reads several augmented views of each image
	// (--views) and can take its negatives from every rank (--global-negatives).
	MultiView bool
	// Build makes the method's networks from mc (validated, its likelihood
	// resolved) and DIM's settings (for the methods that use them) for env; NewMethod places them on the device unless
	// PlacesItself.
	Build        func(mc MethodConfig, dim DIMConfig, env Env) (Method, error)
	PlacesItself bool
	// Describe names the method and its main settings for reports and
	// evaluations, with the encoder's name where it reads best.
	Describe func(mc MethodConfig, dim DIMConfig, encoder string) string
	// Defaults are the method's own values of settings it shares with
	// others (by setting name), used when a new run does not name them.
	Defaults map[string]string
}

// registry lists the methods, in the order --help and reports give them.
var registry = []MethodInfo{
	{Name: "dim", Description: "Deep InfoMax (Hjelm et al., 2019)", MultiView: true, PlacesItself: true,
		Build:    func(_ MethodConfig, dim DIMConfig, env Env) (Method, error) { return asMethod(newDIMMethod(dim, env)) },
		Describe: describeDIM},
	{Name: "amdim", Description: "multi-scale DIM across views (AMDIM: Bachman, Hjelm & Buchwalter, 2019); unless given: encoder amdim28, 2 views, score clip 10, augment amdim", MultiView: true,
		Build: func(mc MethodConfig, dim DIMConfig, env Env) (Method, error) {
			return asMethod(NewAMDIM(mc.AMDIMPairs, dim, env.Spec))
		},
		Describe: describeAMDIM,
		Defaults: map[string]string{"views": "2", "score-clip": "10", "encoder": "amdim28", "augment": "amdim"}},
	{Name: "vae", Description: "variational autoencoder (Kingma & Welling, 2014)",
		Build: func(mc MethodConfig, _ DIMConfig, env Env) (Method, error) {
			return asMethod(newVAE(env.Spec, mc.Likelihood == "bernoulli"))
		},
		Describe: func(mc MethodConfig, _ DIMConfig, enc string) string {
			return fmt.Sprintf("VAE (%s likelihood), %s", mc.Likelihood, enc)
		}},
	{Name: "aae", Description: "adversarial autoencoder (Makhzani et al., 2016)",
		Build: func(mc MethodConfig, dim DIMConfig, env Env) (Method, error) {
			return asMethod(newAAE(env.Spec, mc.Likelihood == "bernoulli", dim.GPWeight, env))
		},
		Describe: func(mc MethodConfig, _ DIMConfig, enc string) string {
			return fmt.Sprintf("AAE (%s likelihood), %s", mc.Likelihood, enc)
		}},
	{Name: "bigan", Description: "BiGAN / ALI (Donahue et al., 2017; Dumoulin et al., 2017)",
		Build:    func(_ MethodConfig, _ DIMConfig, env Env) (Method, error) { return asMethod(newBiGAN(env.Spec, env)) },
		Describe: func(_ MethodConfig, _ DIMConfig, enc string) string { return "BiGAN, " + enc }},
	{Name: "nat", Description: "noise as targets (Bojanowski & Joulin, 2017)",
		OneProcess: "method nat keeps one assignment of targets to images, which data-parallel processes would update apart: train it in one process",
		Build: func(_ MethodConfig, _ DIMConfig, env Env) (Method, error) {
			return asMethod(newNAT(env.Spec, env.Images))
		},
		Describe: func(_ MethodConfig, _ DIMConfig, enc string) string { return "NAT, " + enc }},
	{Name: "cpc", Description: "contrastive predictive coding (van den Oord et al., 2018)",
		OneProcess: "method cpc trains the encoder up to its local map only, and data-parallel gradient averaging " +
			"needs every parameter's gradient: train it in one process",
		Build: func(mc MethodConfig, _ DIMConfig, env Env) (Method, error) {
			spec := env.Spec
			if need := mc.CPCSkip + mc.CPCRows; spec.Local[1] <= need {
				return nil, fmt.Errorf("cpc: predicting %d rows after skipping %d needs a local map of more than %d rows; %s's has %d",
					mc.CPCRows, mc.CPCSkip, need, spec.Name, spec.Local[1])
			}
			return asMethod(newCPC(spec, int64(mc.CPCSkip), int64(mc.CPCRows)))
		},
		Describe: func(mc MethodConfig, _ DIMConfig, enc string) string {
			s := fmt.Sprintf("CPC (%d rows", mc.CPCRows)
			if mc.CPCSkip > 0 {
				s += fmt.Sprintf(" after %d", mc.CPCSkip)
			}
			return s + "), " + enc
		}},
}

// Methods lists the training methods' names.
var Methods = func() []string {
	out := make([]string, len(registry))
	for i, m := range registry {
		out[i] = m.Name
	}
	return out
}()

// MethodHelp is --method's list: each name with its description.
func MethodHelp() []string {
	out := make([]string, len(registry))
	for i, m := range registry {
		out[i] = m.Name + ": " + m.Description
	}
	return out
}

// Lookup returns the method of that name ("" is dim).
func Lookup(name string) (MethodInfo, error) {
	if name == "" {
		name = "dim"
	}
	for _, m := range registry {
		if m.Name == name {
			return m, nil
		}
	}
	return MethodInfo{}, fmt.Errorf("unknown method %q (want %s)", name, strings.Join(Methods, ", "))
}

// asMethod turns a constructor's result into a Method, nil on error (a nil
// *T in an interface would not be a nil Method).
func asMethod[T Method](m T, err error) (Method, error) {
	if err != nil {
		return nil, err
	}
	return m, nil
}

func describeDIM(_ MethodConfig, o DIMConfig, enc string) string {
	s := fmt.Sprintf("DIM(%s) %s, %s, %d MI units", strings.ToUpper(strings.ReplaceAll(strings.ReplaceAll(o.Mode, "local", "L"), "global", "G")), o.Estimator, enc, o.MIUnits)
	if o.Views > 1 {
		s += fmt.Sprintf(", %d views", o.Views)
	}
	if o.CrossView > 0 {
		s += fmt.Sprintf(", cross-view %g", o.CrossView)
	}
	if o.Gamma > 0 {
		s += ", prior"
	}
	return s
}
