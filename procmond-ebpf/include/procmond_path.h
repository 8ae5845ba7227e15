/* procmond_path.h - a path, walked up from a dentry in the kernel.
 *
 * bpf_d_path is not allowed in tracepoints, so the probes walk the dentries
 * themselves: from `d` up to the global root, crossing mount points, one
 * bpf_loop step per component (the verifier checks a step once, not 32
 * times). Kernels before 5.17 have no bpf_loop: built with
 * PROCMOND_BOUNDED_LOOP (procmond_compat.bpf.o), the same step runs inlined
 * 32 times over (an unrolled loop). There the walk's
 * state lives in a per-CPU map, not on the stack: the verifier does not
 * track map contents, so the branches of one step meet again in one state
 * instead of doubling at every component (on the stack, 5.10 gave up
 * after a million instructions). Components are written leaf first, each NUL-terminated; procmond
 * reverses them (platform/sources/ebpf/record.rs). The root itself is one empty
 * component. Shared by the event probes (cwd) and the task iterator (exe,
 * cwd).
 */
#ifndef PROCMOND_PATH_H
#define PROCMOND_PATH_H

#include "procmond_maps.h"

struct path_walk {
	struct dentry *d;
	struct mount *mnt;
	struct vfsmount *vmnt;
	__u32 off;
	int done; /* 1: reached a root; 0 when the loop ran out: truncated */
};

/* One component: 0 to go on, 1 when the walk is over. */
static __always_inline long path_step(struct path_walk *w, char *out)
{
	/* Plain locals: CO-RE reads must not relocate this struct's fields. */
	struct dentry *d = w->d;
	struct mount *mnt = w->mnt;
	struct vfsmount *vmnt = w->vmnt;
	struct dentry *root = BPF_CORE_READ(vmnt, mnt_root);
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	const unsigned char *name;
	__u32 off = w->off;
	long n;

	if (d == root) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

		if (up == mnt || !up) {
			w->done = 1; /* the global root */
			return 1;
		}
		w->d = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = up;
		w->vmnt = (void *)up + bpf_core_field_offset(struct mount, mnt);
		return 0;
	}
	if (d == parent || !parent) {
		w->done = 1; /* the root of a detached tree */
		return 1;
	}
	if (off >= CWD_MAX_LEN)
		return 1;
	name = BPF_CORE_READ(d, d_name.name);
	n = bpf_probe_read_kernel_str(&out[off & (CWD_MAX_LEN - 1)], NAME_MAX_LEN, name);
	if (n <= 0)
		return 1;
	w->off = off + n;
	w->d = parent;
	return 0;
}

#ifdef PROCMOND_BOUNDED_LOOP
PERCPU_SLOT(PATH_WALK, struct path_walk);

/* Runs the walk in `w` (a PATH_WALK slot) to its end or CWD_MAX_DEPTH,
 * unrolled: 5.10's verifier rejects the loop clang lays out here (its
 * back-edge is a fall-through), and no loop is the older kernels' way. */
static __always_inline void walk(struct path_walk *w, char *out)
{
#pragma unroll
	for (__u32 i = 0; i < CWD_MAX_DEPTH; i++)
		if (path_step(w, out))
			break;
}
#else
struct path_walk_ctx {
	struct path_walk w;
	char *out;
};

static long path_loop_step(__u32 index, struct path_walk_ctx *c)
{
	return path_step(&c->w, c->out);
}
#endif

/* Writes the path of (d, vmnt) to `out` (CWD_MAX_LEN + NAME_MAX_LEN bytes);
 * returns its length, or 0 with `trunc_flag` set in `flags` when it is
 * deeper or longer than the walk allows. */
static __always_inline __u32 read_path(struct dentry *d, struct vfsmount *vmnt, char *out,
				       __u32 *flags, __u32 trunc_flag)
{
#ifdef PROCMOND_BOUNDED_LOOP
	__u32 zero = 0;
	struct path_walk *w = bpf_map_lookup_elem(&PATH_WALK, &zero);

	if (!w)
		return 0;
#else
	struct path_walk_ctx c = {};
	struct path_walk *w = &c.w;
#endif
	__u32 off;

	if (!d || !vmnt)
		return 0;
	w->d = d;
	w->vmnt = vmnt;
	w->mnt = (void *)vmnt - bpf_core_field_offset(struct mount, mnt);
	w->off = 0;
	w->done = 0;
#ifdef PROCMOND_BOUNDED_LOOP
	walk(w, out);
#else
	c.out = out;
	bpf_loop(CWD_MAX_DEPTH, path_loop_step, &c, 0);
#endif
	off = w->off;
	if (!w->done || off > CWD_MAX_LEN) {
		*flags |= trunc_flag;
		return 0;
	}
	if (off == 0) {
		out[0] = 0; /* the root: one empty component */
		return 1;
	}
	return off;
}

#endif
