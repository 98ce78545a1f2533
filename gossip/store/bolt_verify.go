package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"
)

// bbolt checksums its meta pages but not the pages of its trees, and it
// trusts them: a damaged page whose child pointer leads back up makes a
// cursor loop for ever, one pointing past the file faults. verifyPages
// walks every tree page reachable from the current meta page once, from
// a separate descriptor and without bbolt, and proves the walk bbolt
// will do terminates inside the file: each page id in range and reached
// once, each page a branch or leaf that says so, each element and key
// inside its page, keys in order, branches not empty. It reads the whole
// file once (a few tens of ms for 64 MiB from tmpfs).
//
// The layout below is bbolt's file format 2, in the machine's byte
// order (bbolt writes its structs as they are in memory).
const (
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	pageHeaderLen   = 16 // id u64, flags u16, count u16, overflow u32
	elementLen      = 16 // branch: pos u32, ksize u32, pgid u64; leaf: flags u32, pos u32, ksize u32, vsize u32
	bucketHeaderLen = 16 // root u64, sequence u64
	metaLen         = 64 // magic, version, pageSize, flags u32; root, sequence, freelist, pgid, txid, checksum u64
	flagBranch      = 0x01
	flagLeaf        = 0x02
	flagFreelist    = 0x10
	noFreelist      = 1<<64 - 1
	leafBucket      = 0x01
)

var ne = binary.NativeEndian

type pageWalker struct {
	f        *os.File
	pageSize int64
	hwm      uint64 // pages below this are in use
	seen     []uint64
}

// verifyPages checks the bbolt file f. An empty file is new and passes.
func verifyPages(f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() == 0 {
		return nil
	}
	w := &pageWalker{f: f}
	root, freelist, hwm, err := w.meta()
	if err != nil {
		return err
	}
	if hwm < 3 || hwm > uint64(fi.Size())/uint64(w.pageSize) {
		return fmt.Errorf("%w: %d pages in use, the file holds %d", ErrCorrupt, hwm, fi.Size()/w.pageSize)
	}
	w.hwm = hwm
	w.seen = make([]uint64, (hwm+63)/64)
	if err := w.tree(root, 0); err != nil {
		return err
	}
	if freelist == noFreelist {
		return nil
	}
	return w.freelist(freelist)
}

// readMeta returns the meta stored at off if it is valid.
func (w *pageWalker) readMeta(off int64) []byte {
	b := make([]byte, pageHeaderLen+metaLen)
	if _, err := w.f.ReadAt(b, off); err != nil {
		return nil
	}
	m := b[pageHeaderLen:]
	h := fnv.New64a()
	h.Write(m[:56])
	if ne.Uint32(m) != boltMagic || ne.Uint32(m[4:]) != boltVersion || ne.Uint64(m[56:]) != h.Sum64() {
		return nil
	}
	return m
}

// meta returns the root page, freelist page and high water mark of the
// meta page bbolt uses: the valid one with the higher transaction id.
func (w *pageWalker) meta() (root, freelist, hwm uint64, err error) {
	// The page size is in the first meta page, or, when that one is
	// damaged, in the second, found where bbolt's page sizes put it.
	metas := [2][]byte{w.readMeta(0)}
	if metas[0] != nil {
		w.pageSize = int64(ne.Uint32(metas[0][8:]))
		metas[1] = w.readMeta(w.pageSize)
	} else {
		for _, size := range []int64{int64(os.Getpagesize()), 4096, 8192, 16384, 32768, 65536} {
			if m := w.readMeta(size); m != nil && int64(ne.Uint32(m[8:])) == size {
				w.pageSize, metas[1] = size, m
				break
			}
		}
	}
	var best []byte
	for _, m := range metas {
		if m != nil && (best == nil || ne.Uint64(m[48:]) > ne.Uint64(best[48:])) {
			best = m
		}
	}
	if best == nil || w.pageSize < 1024 || w.pageSize > 1<<20 || int64(ne.Uint32(best[8:])) != w.pageSize {
		return 0, 0, 0, fmt.Errorf("%w: no valid meta page", ErrCorrupt)
	}
	return ne.Uint64(best[16:]), ne.Uint64(best[32:]), ne.Uint64(best[40:]), nil
}

// tree checks the page id and everything under it; depth bounds the
// recursion even before the seen-set would.
func (w *pageWalker) tree(id uint64, depth int) error {
	if depth > 64 {
		return fmt.Errorf("%w: page tree deeper than 64", ErrCorrupt)
	}
	if id < 2 || id >= w.hwm {
		return fmt.Errorf("%w: page %d out of range [2, %d)", ErrCorrupt, id, w.hwm)
	}
	page, err := w.read(id)
	if err != nil {
		return err
	}
	return w.page(page, fmt.Sprint("page ", id), depth)
}

// read marks page id and its overflow pages as used and returns them.
func (w *pageWalker) read(id uint64) ([]byte, error) {
	hdr := make([]byte, pageHeaderLen)
	if _, err := w.f.ReadAt(hdr, int64(id)*w.pageSize); err != nil {
		return nil, fmt.Errorf("%w: page %d: %v", ErrCorrupt, id, err)
	}
	overflow := uint64(ne.Uint32(hdr[12:]))
	if ne.Uint64(hdr) != id || overflow >= w.hwm-id {
		return nil, fmt.Errorf("%w: page %d: header says page %d with %d overflow pages", ErrCorrupt, id, ne.Uint64(hdr), overflow)
	}
	for p := id; p <= id+overflow; p++ {
		if w.used(p) {
			return nil, fmt.Errorf("%w: page %d reached twice", ErrCorrupt, p)
		}
		w.seen[p/64] |= 1 << (p % 64)
	}
	page := make([]byte, int64(1+overflow)*w.pageSize)
	if _, err := w.f.ReadAt(page, int64(id)*w.pageSize); err != nil && err != io.EOF {
		return nil, fmt.Errorf("%w: page %d: %v", ErrCorrupt, id, err)
	}
	return page, nil
}

func (w *pageWalker) used(p uint64) bool { return w.seen[p/64]&(1<<(p%64)) != 0 }

// freelist checks the free page list: a freelist page whose ids are in
// range, used by no tree, and listed once.
func (w *pageWalker) freelist(id uint64) error {
	if id < 2 || id >= w.hwm {
		return fmt.Errorf("%w: freelist page %d out of range [2, %d)", ErrCorrupt, id, w.hwm)
	}
	page, err := w.read(id)
	if err != nil {
		return err
	}
	if f := ne.Uint16(page[8:]); f != flagFreelist {
		return fmt.Errorf("%w: freelist page %d has flags %#x", ErrCorrupt, id, f)
	}
	n, ids := uint64(ne.Uint16(page[10:])), page[pageHeaderLen:]
	if n == 0xffff { // the real count is the first element
		if len(ids) < 8 {
			return fmt.Errorf("%w: freelist page %d truncated", ErrCorrupt, id)
		}
		n, ids = ne.Uint64(ids), ids[8:]
	}
	if n > uint64(len(ids))/8 {
		return fmt.Errorf("%w: freelist page %d: %d ids do not fit", ErrCorrupt, id, n)
	}
	for i := range n {
		p := ne.Uint64(ids[8*i:])
		if p < 2 || p >= w.hwm || w.used(p) {
			return fmt.Errorf("%w: freelist page %d: page %d is out of range or in use", ErrCorrupt, id, p)
		}
		w.seen[p/64] |= 1 << (p % 64)
	}
	return nil
}

// page checks one page image (from the file, or inline in a bucket
// value) and recurses into what it points to.
func (w *pageWalker) page(page []byte, name string, depth int) error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrCorrupt, name, fmt.Sprintf(format, a...))
	}
	if len(page) < pageHeaderLen {
		return bad("%d bytes, shorter than a page header", len(page))
	}
	flags, count := ne.Uint16(page[8:]), int(ne.Uint16(page[10:]))
	if flags != flagBranch && flags != flagLeaf {
		return bad("flags %#x, neither branch nor leaf", flags)
	}
	if flags == flagBranch && count == 0 {
		return bad("empty branch")
	}
	if pageHeaderLen+count*elementLen > len(page) {
		return bad("%d elements do not fit", count)
	}
	var prev []byte
	for i := range count {
		off := pageHeaderLen + i*elementLen
		el := page[off : off+elementLen]
		var pos, ksize, vsize uint64
		if flags == flagBranch {
			pos, ksize = uint64(ne.Uint32(el)), uint64(ne.Uint32(el[4:]))
		} else {
			pos, ksize, vsize = uint64(ne.Uint32(el[4:])), uint64(ne.Uint32(el[8:])), uint64(ne.Uint32(el[12:]))
		}
		start := uint64(off) + pos
		if ksize == 0 || start+ksize+vsize > uint64(len(page)) {
			return bad("element %d (key %d bytes, value %d bytes at %d) outside the page", i, ksize, vsize, start)
		}
		key := page[start : start+ksize]
		if prev != nil && bytes.Compare(prev, key) >= 0 {
			return bad("keys out of order at element %d", i)
		}
		prev = key
		if flags == flagBranch {
			if err := w.tree(ne.Uint64(el[8:]), depth+1); err != nil {
				return err
			}
			continue
		}
		if ne.Uint32(el)&leafBucket == 0 {
			continue
		}
		val := page[start+ksize : start+ksize+vsize]
		if len(val) < bucketHeaderLen {
			return bad("bucket %q: value of %d bytes", key, len(val))
		}
		if root := ne.Uint64(val); root != 0 {
			if err := w.tree(root, depth+1); err != nil {
				return err
			}
		} else if err := w.page(val[bucketHeaderLen:], fmt.Sprintf("inline bucket %q", key), depth+1); err != nil {
			return err
		}
	}
	return nil
}
