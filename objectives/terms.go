package objectives

import (
	"reflect"

	"github.com/dimtorch/dimtorch/torch"
)

// TermInfo describes a part of a step's loss that the trainer records: a
// field of Terms (the methods' loss parts) or of CriticLosses (a critic's).
type TermInfo struct {
	Key   string // its name in metrics.jsonl
	Label string // its legend in loss.png ("": not drawn)
}

// TermList lists every declared loss part, Terms' then CriticLosses', in
// declaration order, the order every rank of a job shares.
func TermList() []TermInfo { return termList }

var termList = func() []TermInfo {
	var out []TermInfo
	for _, t := range []reflect.Type{reflect.TypeOf(Terms{}), reflect.TypeOf(CriticLosses{})} {
		for i := 0; i < t.NumField(); i++ {
			if k := t.Field(i).Tag.Get("term"); k != "" {
				out = append(out, TermInfo{Key: k, Label: t.Field(i).Tag.Get("label")})
			}
		}
	}
	return out
}()

// TermIndex is the position of a key in TermList (-1: none).
func TermIndex(key string) int {
	for i, t := range termList {
		if t.Key == key {
			return i
		}
	}
	return -1
}

// Each calls f with the index in TermList and the value of every part the
// step computed (non-nil), in TermList's order.
func (t Terms) Each(f func(i int, v *torch.Tensor) error) error {
	rv := reflect.ValueOf(t)
	for i, j := 0, 0; i < rv.NumField(); i++ {
		if rv.Type().Field(i).Tag.Get("term") == "" {
			continue
		}
		if v := rv.Field(i).Interface().(*torch.Tensor); v != nil {
			if err := f(j, v); err != nil {
				return err
			}
		}
		j++
	}
	return nil
}

// Each calls f with the index in TermList and the value of the critic's
// parts it has (the gradient penalty only with HasGP).
func (c CriticLosses) Each(f func(i int, v float64)) {
	f(TermIndex("d_loss"), c.D)
	if c.HasGP {
		f(TermIndex("grad_penalty"), c.GP)
	}
}
