/* mdenas_mpi: the MPI batch program. Thin: parse the command line, call the library. */
#include <mpi.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/commands.h"
#include "mdenas/backend.h"
#include "mdenas/comm.h"
#include "mdenas/search.h"
#include "mdenas/version.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: mdenas_mpi [--help] [--version] <command> [options]\n"
            "\n"
            "MdeNAS neural architecture search by multinomial distribution learning,\n"
            "as an MPI batch program (run it under mpirun or srun).\n"
            "\n"
            "commands:\n"
            "  search [options]     run the MdeNAS search (mdenas_mpi search --help)\n"
            "  derive RUNDIR        print the genotype of a run, finished or not\n"
            "  train --genotype G   train a found network from scratch, evaluating it on the\n"
            "                       test split every epoch (mdenas_mpi train --help)\n"
            "  eval RUNDIR          test top-1/top-5, parameters and multiply-adds of a\n"
            "                       trained network (a train run's directory)\n"
            "  rankcheck --archs K  the performance-ranking hypothesis: Kendall's tau of\n"
            "                       random architectures' rankings by epoch\n"
            "  inspect CHECKPOINT   check a checkpoint and print what it holds\n"
            "  info [--threads N]   print the build, the compute backends and the MPI world,\n"
            "                       after a self-check that runs one op on each backend\n"
            "\n"
            "options:\n"
            "  -h, --help           show this help and exit\n"
            "  --version            print the version and exit\n"
            "\n"
            "Exit status: 0 success; 1 failure (the message says why); 2 bad usage, bad\n"
            "input or a run directory this run may not use; 75 stopped by SIGUSR1 or\n"
            "SIGTERM or SIGINT after writing a checkpoint (it prints the command that resumes).\n");
}

static int parse_threads(const char *s, int *out) {
    char *end = NULL;
    long  v = strtol(s, &end, 10);
    if (!s[0] || *end || v < 0 || v > MD_MAX_THREADS) return -1;
    *out = (int)v;
    return 0;
}

/* Self-check: a 1x1 convolution with a known answer on the CPU backend. */
static int info_selfcheck(md_backend *be) {
    float        x[4] = {1, 2, 3, 4}, w[1] = {0.5f}, y[4] = {0};
    md_conv_desc d = {.n = 1, .c_in = 1, .h = 2, .w = 2, .c_out = 1, .kh = 1, .kw = 1,
                      .stride = 1, .pad = 0, .dilation = 1, .groups = 1};
    md_conv     *c = NULL;
    if (md_conv_create(be, &d, &c) != MD_OK) return -1;
    md_tensor tx = md_tensor_4d(x, 1, 1, 2, 2), tw = md_tensor_4d(w, 1, 1, 1, 1),
              ty = md_tensor_4d(y, 1, 1, 2, 2);
    md_status s = md_conv_forward(c, &tx, &tw, &ty);
    md_conv_destroy(c);
    if (s != MD_OK) return -1;
    for (int i = 0; i < 4; i++)
        if (y[i] != 0.5f * x[i]) {
            md_fail(MD_ERR_BACKEND, "self-check: conv output %d is %g, expected %g", i, y[i],
                    0.5f * x[i]);
            return -1;
        }
    return 0;
}

static int cmd_info(int argc, char **argv, int rank, int world) {
    int threads = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            if (parse_threads(argv[++i], &threads)) {
                fprintf(stderr, "mdenas_mpi info: --threads '%s' is not a number in 0..%d\n",
                        argv[i], MD_MAX_THREADS);
                return 2;
            }
        } else {
            fprintf(stderr, "mdenas_mpi info: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    md_backend *be = NULL;
    if (md_backend_cpu_create(threads, &be) != MD_OK || info_selfcheck(be)) {
        fprintf(stderr, "mdenas_mpi info: cpu backend failed: %s\n", md_error_message());
        md_backend_destroy(be);
        return 1;
    }
    if (rank == 0) {
        char lib[MPI_MAX_LIBRARY_VERSION_STRING];
        int  len = 0;
        MPI_Get_library_version(lib, &len);
        char *nl = strchr(lib, '\n');
        if (nl) *nl = '\0';
        printf("mdenas %s\n", MDENAS_VERSION);
        printf("backend %s (self-check passed)\n", md_backend_describe(be));
        md_backend *gpu = NULL;
        if (!md_backend_cuda_built())
            printf("backend cuda: not built (configure with -DMDENAS_CUDA=ON)\n");
        else if (md_backend_cuda_create(0, 1, 0, &gpu) == MD_OK)
            printf("backend %s\n", md_backend_describe(gpu));
        else
            printf("backend cuda: built, not usable here: %s\n", md_error_message());
        md_backend_destroy(gpu);
        char nv[32];
        md_comm_nccl_version_text(md_comm_nccl_version(), nv, sizeof nv);
        if (md_comm_nccl_version())
            printf("nccl: built, version %s (--comm auto takes it when each rank has its own "
                   "GPU)\n", nv);
        else
            printf("nccl: not built (gradients over host MPI; configure with the CUDA backend and "
                   "-DMDENAS_NCCL=ON)\n");
        printf("mpi: %d rank(s), %s\n", world, lib);
    }
    md_backend_destroy(be);
    return 0;
}

static int wants_help(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

static int cmd_search(const char *prog, int argc, char **argv, int rank, int world, int train) {
    const char *cmd = train == 2 ? "rankcheck" : train ? "train" : "search";
    if (wants_help(argc, argv)) {
        if (rank == 0) {
            if (train == 2) md_rankcheck_usage(stdout);
            else if (train) md_train_usage(stdout);
            else md_search_usage(stdout);
        }
        return 0;
    }
    md_search_config c;
    if (md_search_parse(argc, argv, train, &c)) return 2;
    md_comm *comm = NULL;
    int      stopped = 0;
    md_status s = md_comm_create_world(&comm);
    if (s == MD_OK) s = train == 2 ? md_rankcheck_run(&c, comm, &stopped)
                                   : md_search_run(&c, comm, &stopped);
    md_comm_destroy(comm);
    if (s == MD_OK && stopped && rank == 0) md_search_print_resume(stdout, prog, argc, argv, &c, world);
    if (s == MD_OK) return stopped ? MD_EXIT_STOPPED : 0;
    /* Bad options or a run directory this run may not use: every rank got the
     * same verdict from rank 0, which says why. */
    if (s == MD_ERR_ARG) {
        if (rank == 0) fprintf(stderr, "mdenas_mpi %s: %s\n", cmd, md_error_message());
        return 2;
    }
    fprintf(stderr, "mdenas_mpi %s (rank %d of %d): %s\n", cmd, rank, world, md_error_message());
    return 1;
}

/* A command of one path argument that runs on rank 0: usage on --help or a
 * wrong count (exit 2), the message and fail_rc when run fails. */
static int one_path_command(const char *name, const char *usage_text, int argc, char **argv,
                            int rank, md_status (*run)(const char *path), int fail_rc) {
    if (argc != 1 || wants_help(argc, argv)) {
        if (rank == 0) fprintf(argc == 1 ? stdout : stderr, "%s", usage_text);
        return argc == 1 ? 0 : 2;
    }
    if (rank != 0) return 0;
    if (run(argv[0]) != MD_OK) {
        fprintf(stderr, "mdenas_mpi %s: %s\n", name, md_error_message());
        return fail_rc;
    }
    return 0;
}

static md_status inspect_to_stdout(const char *path) {
    return md_ckpt_inspect(path, stdout);
}

static int cmd_inspect(int argc, char **argv, int rank) {
    return one_path_command("inspect",
                            "usage: mdenas_mpi inspect CHECKPOINT\n"
                            "Checks a checkpoint (format, sizes, checksum) and prints what it "
                            "holds.\n",
                            argc, argv, rank, inspect_to_stdout, 2);
}

static int cmd_derive(int argc, char **argv, int rank) {
    return one_path_command("derive",
                            "usage: mdenas_mpi derive RUNDIR\n"
                            "Prints the DARTS genotype derived from the run's current "
                            "distribution.\n",
                            argc, argv, rank, md_search_derive, 1);
}

static md_status eval_to_stdout(const char *path) {
    return md_train_eval(path, stdout);
}

static int cmd_eval(int argc, char **argv, int rank) {
    return one_path_command("eval",
                            "usage: mdenas_mpi eval RUNDIR\n"
                            "Evaluates the network a `mdenas_mpi train` run trained (its "
                            "net.json and weights.safetensors)\non the test split: top-1, "
                            "top-5, loss, parameters and multiply-adds. OMP_NUM_THREADS sets "
                            "the\nCPU threads.\n",
                            argc, argv, rank, eval_to_stdout, 2);
}

int main(int argc, char **argv) {
    /* Output piped into `head` that has exited: writes fail with EPIPE (and the
     * run goes on, logging to its run directory) instead of killing it. */
    signal(SIGPIPE, SIG_IGN);
    /* A search takes stop signals from the very start: a Slurm signal during
     * MPI start-up then stops it (exit 75) instead of killing it. */
    if (argc > 1 && (!strcmp(argv[1], "search") || !strcmp(argv[1], "train") ||
                     !strcmp(argv[1], "rankcheck")))
        md_search_catch_stop_signals();
    MPI_Init(&argc, &argv);
    int rank = 0, world = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    int rc = 0;
    if (argc < 2) {
        if (rank == 0) usage(stderr);
        rc = 2;
    } else if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        if (rank == 0) usage(stdout);
    } else if (!strcmp(argv[1], "--version")) {
        if (rank == 0) printf("mdenas_mpi %s\n", MDENAS_VERSION);
    } else if (!strcmp(argv[1], "search")) {
        rc = cmd_search(argv[0], argc - 2, argv + 2, rank, world, 0);
    } else if (!strcmp(argv[1], "train")) {
        rc = cmd_search(argv[0], argc - 2, argv + 2, rank, world, 1);
    } else if (!strcmp(argv[1], "rankcheck")) {
        rc = cmd_search(argv[0], argc - 2, argv + 2, rank, world, 2);
    } else if (!strcmp(argv[1], "eval")) {
        rc = cmd_eval(argc - 2, argv + 2, rank);
    } else if (!strcmp(argv[1], "inspect")) {
        rc = cmd_inspect(argc - 2, argv + 2, rank);
    } else if (!strcmp(argv[1], "derive")) {
        rc = cmd_derive(argc - 2, argv + 2, rank);
    } else if (!strcmp(argv[1], "info")) {
        rc = cmd_info(argc - 2, argv + 2, rank, world);
    } else {
        if (rank == 0) {
            fprintf(stderr, "mdenas_mpi: unknown command '%s'\n\n", argv[1]);
            usage(stderr);
        }
        rc = 2;
    }
    if (rc == 1 && world > 1) MPI_Abort(MPI_COMM_WORLD, rc); /* no rank may hang waiting */
    MPI_Finalize();
    return rc;
}
