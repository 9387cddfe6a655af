/* Which path the gradients take (md_comm_choose): a pure function of what one
 * rank knows, so that its whole decision table is tested on CPUs. */
#include <stdio.h>
#include <string.h>

#include "mdenas/comm.h"

md_status md_comm_want_parse(const char *text, md_comm_want *out) {
    static const char *const names[] = {"auto", "mpi", "nccl"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(text, names[i])) {
            *out = (md_comm_want)i;
            return MD_OK;
        }
    return md_fail(MD_ERR_ARG, "--comm '%s': use auto, mpi or nccl", text);
}

/* NCCL_VERSION_CODE: major*10000 + minor*100 + patch since 2.9, major*1000 +
 * minor*100 + patch before. */
void md_comm_nccl_version_text(int v, char *buf, size_t cap) {
    if (v >= 20900) snprintf(buf, cap, "%d.%d.%d", v / 10000, v / 100 % 100, v % 100);
    else snprintf(buf, cap, "%d.%d.%d", v / 1000, v / 100 % 10, v % 100);
}

md_status md_comm_choose(const md_comm_facts *f, md_comm_path *path, char *note, size_t cap) {
    *path = MD_COMM_MPI;
    if (cap) note[0] = '\0';
    if (f->world < 1 || f->local_size < 1 || f->local_size > f->world || f->gpus < 0 ||
        f->want < MD_COMM_WANT_AUTO || f->want > MD_COMM_WANT_NCCL)
        return md_fail(MD_ERR_ARG, "communicator: %d ranks, %d on this node, %d GPUs, want %d",
                       f->world, f->local_size, f->gpus, (int)f->want);
    int  forced = f->want == MD_COMM_WANT_NCCL;
    char why[160] = "", hint[200] = "";
    if (!f->cuda) {
        snprintf(why, sizeof why, "CPU backend");
        snprintf(hint, sizeof hint, "--comm nccl needs the CUDA backend (--device cuda) and this "
                                    "rank runs on the CPU backend");
    } else if (f->want == MD_COMM_WANT_MPI) {
        snprintf(why, sizeof why, "--comm mpi");
    } else if (!f->nccl_version) {
        snprintf(why, sizeof why, "this build has no NCCL");
        snprintf(hint, sizeof hint, "--comm nccl: this build of mdenas has no NCCL (configure "
                                    "with -DMDENAS_NCCL=ON where nccl.h and libnccl are installed)");
    } else if (f->local_size > f->gpus) {
        snprintf(why, sizeof why, "%d ranks share %d GPU%s (NCCL refuses two ranks on one GPU)",
                 f->local_size, f->gpus, f->gpus == 1 ? "" : "s");
        snprintf(hint, sizeof hint, "--comm nccl: %d ranks of this node share %d GPU%s and NCCL "
                                    "refuses two ranks on one GPU; start at most %d rank%s per "
                                    "node", f->local_size, f->gpus, f->gpus == 1 ? "" : "s",
                 f->gpus, f->gpus == 1 ? "" : "s");
    } else if (!forced && f->world < 2) {
        snprintf(why, sizeof why, "one rank, nothing to reduce");
    }
    if (why[0]) {
        if (forced) {
            snprintf(note, cap, "comm: --comm nccl impossible: %s", why);
            return md_fail(MD_ERR_ARG, "%s; --comm auto or --comm mpi take host MPI", hint);
        }
        snprintf(note, cap, "comm: host MPI: %s", why);
        return MD_OK;
    }
    char v[32];
    md_comm_nccl_version_text(f->nccl_version, v, sizeof v);
    *path = MD_COMM_NCCL;
    snprintf(note, cap, "comm: NCCL %s, %d rank%s, one GPU each", v, f->world,
             f->world == 1 ? "" : "s");
    return MD_OK;
}
