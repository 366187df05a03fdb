package cloop

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"math/rand"
)

const scriptHead = "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n"

// header lays out the 136 bytes before the offsets table.
func header(blockSize, nBlocks uint32) []byte {
	b := make([]byte, tableStart)
	copy(b, scriptHead)
	binary.BigEndian.PutUint32(b[128:], blockSize)
	binary.BigEndian.PutUint32(b[132:], nBlocks)
	return b
}

// generate makes a cloop image of n blocks of compressible random-ish
// data, and returns it with the guest data it holds.
func generate(blockSize, n uint32, seed int64) (img, data []byte) {
	r := rand.New(rand.NewSource(seed))
	data = make([]byte, int(blockSize)*int(n))
	for i := 0; i < len(data); i += 64 {
		if r.Intn(3) == 0 {
			r.Read(data[i:min(i+64, len(data))])
		}
	}
	img = header(blockSize, n)
	table := make([]byte, 8*(n+1))
	img = append(img, table...)
	var blocks bytes.Buffer
	for i := uint32(0); i <= n; i++ {
		binary.BigEndian.PutUint64(img[tableStart+8*i:], uint64(len(img)+blocks.Len()))
		if i == n {
			break
		}
		zw, _ := zlib.NewWriterLevel(&blocks, r.Intn(10))
		zw.Write(data[i*blockSize : (i+1)*blockSize])
		zw.Close()
	}
	return append(img, blocks.Bytes()...), data
}
