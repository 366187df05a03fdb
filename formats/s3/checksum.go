package s3

import (
	"context"
	"strings"

	"github.com/minio/minio-go/v7"
)

// checksumMeta is the user metadata (x-amz-meta-qimg-checksum) that
// carries an object's content digest, as "NAME:HEX".
const checksumMeta = "qimg-checksum"

// maxCopySize is the largest object S3 copies in one request, 5 GiB.
const maxCopySize = 5 << 30

// StoreChecksum records digest ("sha256:HEX") with the object. S3 takes
// user metadata only when an object is written, and the digest is known
// only once the upload completed: the object is copied onto itself on
// the server, with the digest added; no data goes over the network.
func (o *Object) StoreChecksum(digest string) error {
	obj, c, err := o.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	st, err := c.StatObject(ctx, obj.bucket, obj.key, minio.StatObjectOptions{})
	if err != nil {
		return requestFailed(c, obj, "storing the checksum", err)
	}
	meta := map[string]string{}
	for k, v := range st.UserMetadata {
		if !strings.EqualFold(k, checksumMeta) {
			meta[k] = v
		}
	}
	meta[checksumMeta] = digest
	dst := minio.CopyDestOptions{Bucket: obj.bucket, Object: obj.key, UserMetadata: meta, ReplaceMetadata: true,
		ContentType: st.ContentType}
	// the copy is of the object just written, not of one a later writer put there
	src := minio.CopySrcOptions{Bucket: obj.bucket, Object: obj.key, MatchETag: st.ETag}
	if st.Size <= maxCopySize {
		_, err = c.Client.CopyObject(ctx, dst, src)
	} else {
		_, err = c.ComposeObject(ctx, dst, src) // by parts
	}
	if err != nil {
		return requestFailed(c, obj, "storing the checksum", err)
	}
	return nil
}

// StoredChecksum is the digest stored with the object ("NAME:HEX"), ""
// when it has none. Only the object's metadata is read.
func (o *Object) StoredChecksum() (string, error) {
	obj, c, err := o.client()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
	defer cancel()
	st, err := c.StatObject(ctx, obj.bucket, obj.key, minio.StatObjectOptions{})
	if err != nil {
		return "", openError(c, obj, err)
	}
	for k, v := range st.UserMetadata {
		if strings.EqualFold(k, checksumMeta) {
			return v, nil
		}
	}
	return "", nil
}
