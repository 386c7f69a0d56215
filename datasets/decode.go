package datasets

import (
	"bytes"
	"image"

	"github.com/dimtorch/dimtorch/internal/jpegturbo"
	"github.com/dimtorch/dimtorch/internal/preproc"
)

// reducedSide is the least side a JPEG of a folder or shards is decoded
// to: both are brought to preproc.DataSide (64) first, by random resized
// crops of at least 30% of the area when training, so twice that keeps
// every crop at its output's resolution or finer.
const reducedSide = 2 * preproc.DataSide

// decodeImage decodes a PNG or JPEG into channels (1 or 3): JPEGs through
// libjpeg-turbo at the smallest of its fast scales (1/8, 1/4, 1/2, 1) that keeps both
// sides at least minSide (0: full size), which skips most of the work for
// large photos; the rest through Go's decoders.
func decodeImage(b []byte, channels, minSide int) (Image, error) {
	if len(b) > 2 && b[0] == 0xff && b[1] == 0xd8 {
		pix, w, h, err := jpegturbo.Decode(b, channels, minSide, minSide)
		if err != nil {
			return Image{}, err
		}
		return Image{C: channels, H: h, W: w, Pix: pix}, nil
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return Image{}, err
	}
	return FromGoImage(img, channels), nil
}
