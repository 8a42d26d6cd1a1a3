// Package powercut is a FUSE filesystem for tests that loses what a power
// cut loses. It holds everything in memory and keeps, beside what
// programs see, what is durable: a file's data as of its last fsync, a
// folder's entries (creates, renames, unlinks) as of its last fsync, as
// POSIX promises and no more. Cut drops the rest, tearing writes that were
// not synced: of data appended since the last fsync a random prefix
// survives, of data overwritten in place each 512-byte sector is old or
// new at random. A file survives only through folder entries that were
// made durable, from the root down; the root itself always does.
//
// Tests mount it as root with /dev/fuse (Mount skips them otherwise, and
// fails them under CI, as peertest does for missing peers).
package powercut

import (
	"context"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// sector is the unit in which an overwrite that was not synced survives
// or not.
const sector = 512

// FS is the filesystem's state, which outlives mounts: Cut, then Mount
// again, is a power cut and a reboot. Its methods are safe for concurrent
// use.
type FS struct {
	mu      sync.Mutex
	rng     *rand.Rand
	root    *node
	nextIno uint64
	// off is set from a Cut to the next Mount: every operation fails with
	// EIO, as on a machine without power.
	off bool
	// cuts counts the cuts, for reports.
	cuts int
}

// node is a file or a folder.
type node struct {
	ino  uint64
	dir  bool
	perm uint32
	// data is a file's content and durable what of it was fsync'd.
	data, durable []byte
	// kids are a folder's entries and durableKids those fsync'd.
	kids, durableKids map[string]*node
}

// New returns an empty filesystem whose tearing follows seed.
func New(seed uint64) *FS {
	f := &FS{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), nextIno: 2}
	f.root = &node{ino: 1, dir: true, perm: 0o755, kids: map[string]*node{}, durableKids: map[string]*node{}}
	return f
}

// Cuts returns how many times the power was cut.
func (f *FS) Cuts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cuts
}

// Cut cuts the power: from now until the next Mount every operation fails
// with EIO, and what was not durable is gone, or torn.
func (f *FS) Cut() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.off = true
	f.cuts++
	seen := map[*node]bool{}
	var walk func(n *node)
	walk = func(n *node) {
		if seen[n] {
			return
		}
		seen[n] = true
		if !n.dir {
			n.data = f.tear(n.data, n.durable)
			n.durable = slices.Clone(n.data)
			return
		}
		n.kids = maps.Clone(n.durableKids)
		for _, name := range slices.Sorted(maps.Keys(n.kids)) {
			walk(n.kids[name])
		}
	}
	walk(f.root)
}

// tear returns what survives of a file whose content is cur and whose
// durable content is dur.
func (f *FS) tear(cur, dur []byte) []byte {
	n := len(dur)
	switch {
	case len(cur) > len(dur):
		// Of what was appended, a prefix.
		n += f.rng.IntN(len(cur) - len(dur) + 1)
	case len(cur) < len(dur) && f.rng.IntN(2) == 0:
		// A truncation that was not synced happened, or not.
		n = len(cur)
	}
	out := make([]byte, n)
	for off := 0; off < n; off += sector {
		end := min(off+sector, n)
		switch {
		case off >= len(dur):
			copy(out[off:end], cur[off:])
		case end > len(cur):
			copy(out[off:end], dur[off:])
		case f.rng.IntN(2) == 0:
			copy(out[off:end], cur[off:])
		default:
			copy(out[off:end], dur[off:])
		}
		// A sector that straddles the ends of cur and dur mixes both.
		if off < len(dur) && end > len(dur) {
			copy(out[len(dur):end], cur[len(dur):])
		}
	}
	return out
}

// Mount mounts f on dir (which must exist) until the test ends or Unmount
// is called, and turns the power on. It skips the test without root or
// /dev/fuse (fails it under CI).
func (f *FS) Mount(t testing.TB, dir string) *Mount {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, "powercut needs root to mount FUSE; run the tests as root")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		missing(t, "powercut needs /dev/fuse: %v", err)
	}
	f.mu.Lock()
	f.off = false
	f.mu.Unlock()
	zero := 0 * time.Second
	srv, err := fs.Mount(dir, &inode{fsys: f, n: f.root}, &fs.Options{
		MountOptions: fuse.MountOptions{
			DirectMount: true, DirectMountStrict: true,
			FsName: "powercut", Name: "powercut", DisableXAttrs: true,
		},
		// The kernel must not remember what a cut took away.
		EntryTimeout: &zero, AttrTimeout: &zero, NegativeTimeout: &zero,
	})
	if err != nil {
		missing(t, "mount powercut on %s: %v", dir, err)
	}
	m := &Mount{srv: srv}
	t.Cleanup(func() { m.Unmount() })
	return m
}

// Mount is one mount of an FS.
type Mount struct {
	once sync.Once
	srv  *fuse.Server
	err  error
}

// Unmount unmounts; nothing may be open on the mount. Later calls do
// nothing.
func (m *Mount) Unmount() error {
	m.once.Do(func() {
		m.err = m.srv.Unmount()
		if m.err == nil {
			m.srv.Wait()
		}
	})
	return m.err
}

func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// inode is the go-fuse face of a node.
type inode struct {
	fs.Inode
	fsys *FS
	n    *node
}

var (
	_ fs.NodeLookuper  = (*inode)(nil)
	_ fs.NodeGetattrer = (*inode)(nil)
	_ fs.NodeSetattrer = (*inode)(nil)
	_ fs.NodeReaddirer = (*inode)(nil)
	_ fs.NodeMkdirer   = (*inode)(nil)
	_ fs.NodeCreater   = (*inode)(nil)
	_ fs.NodeOpener    = (*inode)(nil)
	_ fs.NodeReader    = (*inode)(nil)
	_ fs.NodeWriter    = (*inode)(nil)
	_ fs.NodeFsyncer   = (*inode)(nil)
	_ fs.NodeUnlinker  = (*inode)(nil)
	_ fs.NodeRmdirer   = (*inode)(nil)
	_ fs.NodeRenamer   = (*inode)(nil)
)

// lock takes the filesystem's lock, or reports EIO while the power is off.
func (i *inode) lock() syscall.Errno {
	i.fsys.mu.Lock()
	if i.fsys.off {
		i.fsys.mu.Unlock()
		return syscall.EIO
	}
	return 0
}

func (i *inode) unlock() { i.fsys.mu.Unlock() }

func (n *node) attr(out *fuse.Attr) {
	out.Ino = n.ino
	out.Nlink = 1
	if n.dir {
		out.Mode = fuse.S_IFDIR | n.perm
		out.Nlink = 2
		return
	}
	out.Mode = fuse.S_IFREG | n.perm
	out.Size = uint64(len(n.data))
	out.Blocks = (out.Size + 511) / 512
}

func (i *inode) child(ctx context.Context, n *node, out *fuse.EntryOut) *fs.Inode {
	n.attr(&out.Attr)
	mode := uint32(fuse.S_IFREG)
	if n.dir {
		mode = fuse.S_IFDIR
	}
	return i.NewInode(ctx, &inode{fsys: i.fsys, n: n}, fs.StableAttr{Mode: mode, Ino: n.ino})
}

func (i *inode) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := i.lock(); e != 0 {
		return nil, e
	}
	defer i.unlock()
	n, ok := i.n.kids[name]
	if !ok {
		return nil, syscall.ENOENT
	}
	return i.child(ctx, n, out), 0
}

func (i *inode) Getattr(ctx context.Context, _ fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if e := i.lock(); e != 0 {
		return e
	}
	defer i.unlock()
	i.n.attr(&out.Attr)
	return 0
}

func (i *inode) Setattr(ctx context.Context, _ fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if e := i.lock(); e != 0 {
		return e
	}
	defer i.unlock()
	if size, ok := in.GetSize(); ok {
		if i.n.dir {
			return syscall.EISDIR
		}
		i.n.data = resize(i.n.data, int(size))
	}
	if mode, ok := in.GetMode(); ok {
		i.n.perm = mode & 0o7777
	}
	i.n.attr(&out.Attr)
	return 0
}

func resize(b []byte, n int) []byte {
	if n <= len(b) {
		return b[:n:n]
	}
	return append(b, make([]byte, n-len(b))...)
}

func (i *inode) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	if e := i.lock(); e != 0 {
		return nil, e
	}
	defer i.unlock()
	var ents []fuse.DirEntry
	for _, name := range slices.Sorted(maps.Keys(i.n.kids)) {
		n := i.n.kids[name]
		mode := uint32(fuse.S_IFREG)
		if n.dir {
			mode = fuse.S_IFDIR
		}
		ents = append(ents, fuse.DirEntry{Name: name, Ino: n.ino, Mode: mode})
	}
	return fs.NewListDirStream(ents), 0
}

func (i *inode) add(name string, n *node) syscall.Errno {
	if !i.n.dir {
		return syscall.ENOTDIR
	}
	if _, ok := i.n.kids[name]; ok {
		return syscall.EEXIST
	}
	n.ino = i.fsys.nextIno
	i.fsys.nextIno++
	i.n.kids[name] = n
	return 0
}

func (i *inode) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if e := i.lock(); e != 0 {
		return nil, e
	}
	defer i.unlock()
	n := &node{dir: true, perm: mode & 0o7777, kids: map[string]*node{}, durableKids: map[string]*node{}}
	if e := i.add(name, n); e != 0 {
		return nil, e
	}
	return i.child(ctx, n, out), 0
}

func (i *inode) Create(ctx context.Context, name string, flags, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	if e := i.lock(); e != 0 {
		return nil, nil, 0, e
	}
	defer i.unlock()
	n := &node{perm: mode & 0o7777}
	if e := i.add(name, n); e != 0 {
		return nil, nil, 0, e
	}
	return i.child(ctx, n, out), nil, fuse.FOPEN_DIRECT_IO, 0
}

func (i *inode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if e := i.lock(); e != 0 {
		return nil, 0, e
	}
	defer i.unlock()
	if flags&syscall.O_TRUNC != 0 && !i.n.dir {
		i.n.data = i.n.data[:0:0]
	}
	// No page cache: what programs read is what the model holds.
	return nil, fuse.FOPEN_DIRECT_IO, 0
}

func (i *inode) Read(ctx context.Context, _ fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if e := i.lock(); e != 0 {
		return nil, e
	}
	defer i.unlock()
	if off >= int64(len(i.n.data)) {
		return fuse.ReadResultData(nil), 0
	}
	n := copy(dest, i.n.data[off:])
	return fuse.ReadResultData(dest[:n]), 0
}

func (i *inode) Write(ctx context.Context, _ fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if e := i.lock(); e != 0 {
		return 0, e
	}
	defer i.unlock()
	end := int(off) + len(data)
	if end > len(i.n.data) {
		i.n.data = resize(i.n.data, end)
	} else {
		// Never write into a slice that durable or a cut image shares.
		i.n.data = slices.Clone(i.n.data)
	}
	copy(i.n.data[off:], data)
	return uint32(len(data)), 0
}

// Fsync makes a file's data, or a folder's entries, durable.
func (i *inode) Fsync(ctx context.Context, _ fs.FileHandle, flags uint32) syscall.Errno {
	if e := i.lock(); e != 0 {
		return e
	}
	defer i.unlock()
	if i.n.dir {
		i.n.durableKids = maps.Clone(i.n.kids)
	} else {
		i.n.durable = slices.Clone(i.n.data)
	}
	return 0
}

func (i *inode) Unlink(ctx context.Context, name string) syscall.Errno {
	if e := i.lock(); e != 0 {
		return e
	}
	defer i.unlock()
	n, ok := i.n.kids[name]
	if !ok {
		return syscall.ENOENT
	}
	if n.dir {
		return syscall.EISDIR
	}
	delete(i.n.kids, name)
	return 0
}

func (i *inode) Rmdir(ctx context.Context, name string) syscall.Errno {
	if e := i.lock(); e != 0 {
		return e
	}
	defer i.unlock()
	n, ok := i.n.kids[name]
	switch {
	case !ok:
		return syscall.ENOENT
	case !n.dir:
		return syscall.ENOTDIR
	case len(n.kids) > 0:
		return syscall.ENOTEMPTY
	}
	delete(i.n.kids, name)
	return 0
}

func (i *inode) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if e := i.lock(); e != 0 {
		return e
	}
	defer i.unlock()
	if flags != 0 {
		return syscall.EINVAL
	}
	to, ok := newParent.(*inode)
	if !ok || !to.n.dir {
		return syscall.ENOTDIR
	}
	n, ok := i.n.kids[name]
	if !ok {
		return syscall.ENOENT
	}
	if old, ok := to.n.kids[newName]; ok && old != n {
		switch {
		case old.dir && !n.dir:
			return syscall.EISDIR
		case !old.dir && n.dir:
			return syscall.ENOTDIR
		case old.dir && len(old.kids) > 0:
			return syscall.ENOTEMPTY
		}
	}
	delete(i.n.kids, name)
	to.n.kids[newName] = n
	return 0
}
