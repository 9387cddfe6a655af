/* The communicator's choice of path (md_comm_choose) over its whole decision
 * table, --comm's parsing, and md_comm_select on a one-rank CPU communicator.
 * Each case's expected path and words are derived here independently of the
 * function's own order of checks. */
#include <stdio.h>
#include <string.h>

#include "mdenas/comm.h"
#include "testutil.h"

#define NCCL_2_28_9 22809

typedef struct {
    int world, local_size, gpus;
    int distinct; /* every rank of the node has its own GPU */
} layout;

static const char *want_name(md_comm_want w) {
    return w == MD_COMM_WANT_AUTO ? "auto" : w == MD_COMM_WANT_MPI ? "mpi" : "nccl";
}

/* One row of the table: what the path and the words must be. */
static void check_row(md_comm_want want, int cuda, int nccl, const layout *l) {
    md_comm_facts f = {.want = want, .cuda = cuda, .nccl_version = nccl ? NCCL_2_28_9 : 0,
                       .world = l->world, .local_size = l->local_size, .gpus = l->gpus};
    char         note[200] = "x", row[160];
    snprintf(row, sizeof row, "want %s, %s, nccl %d, world %d, %d local, %d GPUs",
             want_name(want), cuda ? "cuda" : "cpu", nccl, l->world, l->local_size, l->gpus);
    md_comm_path path = (md_comm_path)-1;
    md_error_clear();
    md_status s = md_comm_choose(&f, &path, note, sizeof note);

    int can_nccl = cuda && nccl && l->distinct;
    int takes = want == MD_COMM_WANT_NCCL ? can_nccl
              : want == MD_COMM_WANT_AUTO ? can_nccl && l->world >= 2 : 0;
    int fails = want == MD_COMM_WANT_NCCL && !can_nccl;
    if (fails) {
        CHECK(s == MD_ERR_ARG, "%s: status %d, want MD_ERR_ARG", row, (int)s);
        CHECK(path == MD_COMM_MPI, "%s: a failed choice left path %d", row, (int)path);
        const char *m = md_error_message();
        CHECK(strstr(m, "--comm nccl") && strstr(m, "--comm auto"), "%s: message '%s'", row, m);
        const char *why = !cuda ? "CUDA backend" : !nccl ? "-DMDENAS_NCCL=ON" : "share";
        CHECK(strstr(m, why), "%s: message '%s' lacks '%s'", row, m, why);
        CHECK(strstr(note, "impossible"), "%s: note '%s'", row, note);
        return;
    }
    CHECK(s == MD_OK, "%s: failed: %s", row, md_error_message());
    CHECK(path == (takes ? MD_COMM_NCCL : MD_COMM_MPI), "%s: path %d", row, (int)path);
    char want_note[200];
    if (takes)
        snprintf(want_note, sizeof want_note, "comm: NCCL 2.28.9, %d rank%s, one GPU each",
                 l->world, l->world == 1 ? "" : "s");
    else if (!cuda)
        snprintf(want_note, sizeof want_note, "comm: host MPI: CPU backend");
    else if (want == MD_COMM_WANT_MPI)
        snprintf(want_note, sizeof want_note, "comm: host MPI: --comm mpi");
    else if (!nccl)
        snprintf(want_note, sizeof want_note, "comm: host MPI: this build has no NCCL");
    else if (!l->distinct)
        snprintf(want_note, sizeof want_note,
                 "comm: host MPI: %d ranks share %d GPU%s (NCCL refuses two ranks on one GPU)",
                 l->local_size, l->gpus, l->gpus == 1 ? "" : "s");
    else
        snprintf(want_note, sizeof want_note, "comm: host MPI: one rank, nothing to reduce");
    CHECK(!strcmp(note, want_note), "%s: note '%s', want '%s'", row, note, want_note);
}

static void test_table(void) {
    static const layout layouts[] = {
        {1, 1, 1, 1}, /* one rank, one GPU */
        {1, 1, 8, 1}, /* one rank on an 8-GPU node */
        {2, 2, 2, 1}, /* two ranks, a GPU each */
        {2, 2, 1, 0}, /* two ranks share one GPU: the one-GPU test machine */
        {8, 8, 8, 1}, /* a full 8-GPU node */
        {8, 8, 1, 0}, /* eight ranks on one GPU */
        {8, 8, 4, 0}, /* eight ranks on four GPUs */
        {8, 4, 4, 1}, /* two nodes of four GPUs */
        {8, 4, 2, 0}, /* two nodes, four ranks on two GPUs each */
    };
    int rows = 0;
    for (int w = 0; w < 3; w++)
        for (int cuda = 0; cuda < 2; cuda++)
            for (int nccl = 0; nccl < 2; nccl++)
                for (size_t l = 0; l < sizeof layouts / sizeof *layouts; l++, rows++)
                    check_row((md_comm_want)w, cuda, nccl, &layouts[l]);
    CHECK(rows == 3 * 2 * 2 * 9, "%d rows", rows);
}

/* The brief's three example lines, verbatim. */
static void test_examples(void) {
    char          note[200];
    md_comm_path  path;
    md_comm_facts f = {MD_COMM_WANT_AUTO, 1, NCCL_2_28_9, 8, 8, 8};
    CHECK_OK(md_comm_choose(&f, &path, note, sizeof note));
    CHECK(path == MD_COMM_NCCL && !strcmp(note, "comm: NCCL 2.28.9, 8 ranks, one GPU each"),
          "8 ranks: %d '%s'", (int)path, note);
    f = (md_comm_facts){MD_COMM_WANT_AUTO, 1, NCCL_2_28_9, 2, 2, 1};
    CHECK_OK(md_comm_choose(&f, &path, note, sizeof note));
    CHECK(path == MD_COMM_MPI &&
              !strcmp(note, "comm: host MPI: 2 ranks share 1 GPU (NCCL refuses two ranks on one GPU)"),
          "shared: %d '%s'", (int)path, note);
    f = (md_comm_facts){MD_COMM_WANT_AUTO, 0, NCCL_2_28_9, 2, 2, 0};
    CHECK_OK(md_comm_choose(&f, &path, note, sizeof note));
    CHECK(path == MD_COMM_MPI && !strcmp(note, "comm: host MPI: CPU backend"), "cpu: '%s'", note);
    /* An NCCL before 2.9 encodes its version as major*1000 + minor*100 + patch. */
    f = (md_comm_facts){MD_COMM_WANT_NCCL, 1, 2708, 1, 1, 1};
    CHECK_OK(md_comm_choose(&f, &path, note, sizeof note));
    CHECK(path == MD_COMM_NCCL && !strcmp(note, "comm: NCCL 2.7.8, 1 rank, one GPU each"),
          "old version: '%s'", note);
    /* A truncated note is still a terminated string. */
    char small[12];
    f = (md_comm_facts){MD_COMM_WANT_AUTO, 0, 0, 1, 1, 0};
    CHECK_OK(md_comm_choose(&f, &path, small, sizeof small));
    CHECK(strlen(small) == sizeof small - 1 && !strncmp(small, "comm: host", 10), "'%s'", small);
}

static void test_bad_facts(void) {
    static const md_comm_facts bad[] = {
        {MD_COMM_WANT_AUTO, 1, NCCL_2_28_9, 0, 1, 1},  /* no ranks */
        {MD_COMM_WANT_AUTO, 1, NCCL_2_28_9, 2, 3, 4},  /* more local ranks than ranks */
        {MD_COMM_WANT_AUTO, 1, NCCL_2_28_9, 2, 0, 4},  /* no local rank */
        {MD_COMM_WANT_AUTO, 1, NCCL_2_28_9, 2, 2, -1}, /* negative GPUs */
        {(md_comm_want)7, 1, NCCL_2_28_9, 2, 2, 2},    /* unknown want */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        md_comm_path path = MD_COMM_NCCL;
        char         note[64];
        CHECK(md_comm_choose(&bad[i], &path, note, sizeof note) == MD_ERR_ARG,
              "bad facts %zu accepted", i);
        CHECK(path == MD_COMM_MPI, "bad facts %zu: path %d", i, (int)path);
    }
}

static void test_parse(void) {
    md_comm_want w = (md_comm_want)-1;
    CHECK(md_comm_want_parse("auto", &w) == MD_OK && w == MD_COMM_WANT_AUTO, "auto");
    CHECK(md_comm_want_parse("mpi", &w) == MD_OK && w == MD_COMM_WANT_MPI, "mpi");
    CHECK(md_comm_want_parse("nccl", &w) == MD_OK && w == MD_COMM_WANT_NCCL, "nccl");
    static const char *const bad[] = {"NCCL", "", "mpi ", "gloo"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        w = MD_COMM_WANT_MPI;
        CHECK(md_comm_want_parse(bad[i], &w) == MD_ERR_ARG, "'%s' accepted", bad[i]);
        CHECK(strstr(md_error_message(), "--comm") != NULL, "'%s': %s", bad[i],
              md_error_message());
        CHECK(w == MD_COMM_WANT_MPI, "'%s' changed the output", bad[i]);
    }
}

/* md_comm_select on one rank of a CPU backend: auto is host MPI, nccl an error
 * naming --comm; the host allreduce then leaves one rank's values alone. */
static void test_select_cpu(void) {
    md_comm    *c = NULL;
    md_backend *be = NULL;
    CHECK_OK(md_comm_create_self(&c));
    CHECK_OK(md_backend_cpu_create(1, &be));
    if (!c || !be) return;
    char note[200] = "";
    CHECK(md_comm_select(c, be, MD_COMM_WANT_NCCL, note, sizeof note) == MD_ERR_ARG,
          "--comm nccl accepted on the CPU backend");
    CHECK(strstr(md_error_message(), "--comm nccl") && strstr(md_error_message(), "CUDA backend"),
          "message: %s", md_error_message());
    CHECK_OK(md_comm_select(c, be, MD_COMM_WANT_AUTO, note, sizeof note));
    CHECK(md_comm_get_path(c) == MD_COMM_MPI && !strcmp(note, "comm: host MPI: CPU backend"),
          "auto: %d '%s'", (int)md_comm_get_path(c), note);
    float    g[32], e[3] = {5, 6, 1};
    md_range r[2] = {{0, 4}, {16, 3}};
    for (int i = 0; i < 32; i++) g[i] = (float)i;
    CHECK_OK(md_comm_allreduce_grads_on(c, be, g, r, 2, e, 3));
    CHECK(g[3] == 3 && g[17] == 17 && e[0] == 5 && e[2] == 1, "one rank changed values");
    CHECK(md_comm_nccl_version() == 0 || md_comm_nccl_version() >= 2000,
          "NCCL version code %d", md_comm_nccl_version());
    md_backend_destroy(be);
    md_comm_destroy(c);
}

int main(void) {
    test_table();
    test_examples();
    test_bad_facts();
    test_parse();
    test_select_cpu();
    return md_test_finish("test_comm_select");
}
