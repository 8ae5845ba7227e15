/* procmond_path.h - a path, walked up from a dentry in the kernel.
 *
 * bpf_d_path is not allowed in tracepoints, so the probes walk the dentries
 * themselves: from `d` up to the global root, crossing mount points, one
 * bpf_loop step per component (the verifier checks a step once, not 32
 * times). Components are written leaf first, each NUL-terminated; procmond
 * reverses them (sources/ebpf/record.rs). The root itself is one empty
 * component. Shared by the event probes (cwd) and the task iterator (exe,
 * cwd).
 */
#ifndef PROCMOND_PATH_H
#define PROCMOND_PATH_H

struct path_walk {
	struct dentry *d;
	struct mount *mnt;
	struct vfsmount *vmnt;
	char *out;
	__u32 off;
	int done; /* 1: reached a root; 0 when the loop ran out: truncated */
};

static long path_step(__u32 index, struct path_walk *w)
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
	n = bpf_probe_read_kernel_str(&w->out[off & (CWD_MAX_LEN - 1)],
				      NAME_MAX_LEN, name);
	if (n <= 0)
		return 1;
	w->off = off + n;
	w->d = parent;
	return 0;
}

/* Writes the path of (d, vmnt) to `out` (CWD_MAX_LEN + NAME_MAX_LEN bytes);
 * returns its length, or 0 with `trunc_flag` set in `flags` when it is
 * deeper or longer than the walk allows. */
static __always_inline __u32 read_path(struct dentry *d, struct vfsmount *vmnt, char *out,
				       __u32 *flags, __u32 trunc_flag)
{
	struct path_walk w = {};

	if (!d || !vmnt)
		return 0;
	w.d = d;
	w.vmnt = vmnt;
	w.mnt = (void *)vmnt - bpf_core_field_offset(struct mount, mnt);
	w.out = out;
	bpf_loop(CWD_MAX_DEPTH, path_step, &w, 0);
	if (!w.done || w.off > CWD_MAX_LEN) {
		*flags |= trunc_flag;
		return 0;
	}
	if (w.off == 0) {
		out[0] = 0; /* the root: one empty component */
		return 1;
	}
	return w.off;
}

#endif
