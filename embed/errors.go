package embed

import (
	"context"
	"errors"
	"fmt"
)

// The errors of a Model's methods, for errors.Is: what went wrong, without
// reading the message. A caller's fault (ErrSize, ErrChannels, ErrImage)
// is told apart from the model's state (ErrClosed, ErrCanceled) and from
// the rest (onnxruntime's failures, a model that images cannot be made
// for), which match none of them.
var (
	// ErrClosed: the model was closed (Close) before the call.
	ErrClosed = errors.New("embed: the model is closed")
	// ErrCanceled: the call's context was done before or during the run.
	// The error also matches the context's own error (context.Canceled or
	// context.DeadlineExceeded) and its message is that error's.
	ErrCanceled = errors.New("embed: cancelled")
	// ErrSize: an image is not of the model's size (Pixels, EmbedImages),
	// or the values given do not make the number of images said
	// (EmbedBatch).
	ErrSize = errors.New("embed: the input has the wrong size")
	// ErrChannels: an image's colour mode is not the model's (Pixels,
	// EmbedImages: a grayscale image for a colour model or the reverse).
	ErrChannels = errors.New("embed: the image has the wrong colour mode")
	// ErrImage: an image that cannot be used: a file that does not decode
	// as PNG or JPEG (EmbedFile), an image without pixels (Preprocess).
	ErrImage = errors.New("embed: not a usable image")
	// ErrPreprocessing: Open found a preprocessing record (metadata
	// dimtorch.preprocessing) that is malformed, of a newer version, or at
	// odds with the graph's input.
	ErrPreprocessing = errors.New("embed: invalid preprocessing metadata")
)

// kindError is an error of one of the kinds above with its own message.
type kindError struct {
	kind error
	msg  string
	err  error // the cause, if any
}

func (e *kindError) Error() string        { return e.msg }
func (e *kindError) Is(target error) bool { return target == e.kind }
func (e *kindError) Unwrap() error        { return e.err }

func kindf(kind error, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &kindError{kind: kind, msg: err.Error(), err: errors.Unwrap(err)}
}

// canceled wraps a done context's error: it matches ErrCanceled and the
// context's error, and reads as the latter.
func canceled(ctx context.Context) error {
	err := ctx.Err()
	if err == nil {
		err = context.Canceled
	}
	return &kindError{kind: ErrCanceled, msg: err.Error(), err: err}
}
