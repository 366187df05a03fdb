package s3

import (
	"context"

	"github.com/minio/minio-go/v7"
)

// AbortUploads aborts every unfinished multipart upload of the object:
// the parts a killed convert left behind, which the bucket keeps (and
// bills) until someone aborts them. An upload another process is running
// to the same key is aborted too, and fails. It returns how many it
// aborted.
func (o *Object) AbortUploads() (int, error) {
	obj, c, err := o.client()
	if err != nil {
		return 0, err
	}
	ids, err := unfinishedUploads(c, obj)
	if err != nil {
		return 0, requestFailed(c, obj, "listing its unfinished uploads", err)
	}
	for n, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		err := c.AbortMultipartUpload(ctx, obj.bucket, obj.key, id)
		cancel()
		if err != nil && minio.ToErrorResponse(err).Code != "NoSuchUpload" {
			return n, requestFailed(c, obj, "aborting an unfinished upload", err)
		}
	}
	return len(ids), nil
}

// unfinishedUploads lists the ids of the object's unfinished uploads,
// page by page; the listing is by prefix, so other keys are skipped.
func unfinishedUploads(c *minio.Core, obj object) ([]string, error) {
	var ids []string
	keyMarker, idMarker := "", ""
	for {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		res, err := c.ListMultipartUploads(ctx, obj.bucket, obj.key, keyMarker, idMarker, "", 1000)
		cancel()
		if err != nil {
			return nil, err
		}
		for _, u := range res.Uploads {
			if u.Key == obj.key {
				ids = append(ids, u.UploadID)
			}
		}
		if !res.IsTruncated || (res.NextKeyMarker == keyMarker && res.NextUploadIDMarker == idMarker) {
			return ids, nil
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}
