/* Kendall's tau-b on hand-worked cases (ties in x, in y, in both, constants,
 * bad input), against an independent brute-force formula on random data with
 * ties; tau by epoch on a small accuracy matrix; the SVG line plot read back.
 * Files go to a fresh ./rank_test.XXXXXX, removed when every check passes. */
#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mdenas/error.h"
#include "mdenas/plot.h"
#include "mdenas/rank.h"
#include "mdenas/rng.h"
#include "testutil.h"

static char tmpdir[64];

static double tau_of(const double *x, const double *y, int n) {
    double    t = -42;
    md_status s = md_kendall_tau_b(x, y, n, &t);
    if (s != MD_OK) {
        fprintf(stderr, "md_kendall_tau_b failed: %s\n", md_error_message());
        md_test_failures++;
    }
    return t;
}

#define CHECK_TAU(x, y, want)                                                                      \
    do {                                                                                           \
        double got_ = tau_of((x), (y), (int)(sizeof(x) / sizeof((x)[0])));                         \
        CHECK(fabs(got_ - (want)) <= 1e-15, "tau = %.17g, want %.17g", got_, (double)(want));      \
    } while (0)

static void test_hand_cases(void) {
    /* Identical rankings, n = 5: all 10 pairs concordant, tau = 10 / sqrt(10 * 10) = 1. */
    double a[] = {1, 2, 3, 4, 5}, a_sq[] = {1, 4, 9, 16, 25};
    CHECK_TAU(a, a, 1.0);
    CHECK_TAU(a, a_sq, 1.0); /* only the ranks matter */
    /* Reversed: all 10 discordant, tau = -10 / 10 = -1. */
    double rev[] = {5, 4, 3, 2, 1};
    CHECK_TAU(a, rev, -1.0);
    /* x = [1,2,3,4], y = [1,2,4,3]: of the 6 pairs only (2,3) is discordant;
     * C = 5, D = 1, no ties: tau = (5 - 1) / 6 = 4/6. */
    double x4[] = {1, 2, 3, 4}, y4[] = {1, 2, 4, 3};
    CHECK_TAU(x4, y4, 4.0 / 6.0);

    /* Ties in x: x = [1,2,2,3], y = [1,2,3,4]. Pairs (i,j): (0,1) C, (0,2) C,
     * (0,3) C, (1,2) tied in x, (1,3) C, (2,3) C. C = 5, D = 0, n0 = 6, n1 = 1,
     * n2 = 0: tau = 5 / sqrt(5 * 6) = 5 / sqrt(30) = 0.91287092917527690. */
    double tx[] = {1, 2, 2, 3}, ty[] = {1, 2, 3, 4};
    CHECK_TAU(tx, ty, 5.0 / sqrt(30.0));
    CHECK_TAU(ty, tx, 5.0 / sqrt(30.0)); /* the same tie now in y */

    /* Ties in y: x = [1,2,3,4], y = [2,1,1,3]. (0,1) D (x up, y down), (0,2) D,
     * (0,3) C, (1,2) tied in y, (1,3) C, (2,3) C. C = 3, D = 2, n1 = 0, n2 = 1:
     * tau = 1 / sqrt(6 * 5) = 1 / sqrt(30) = 0.18257418583505536. */
    double uy[] = {2, 1, 1, 3};
    CHECK_TAU(x4, uy, 1.0 / sqrt(30.0));

    /* Ties in both (different pairs): x = [1,2,2,3], y = [1,2,3,3]. (0,1) C,
     * (0,2) C, (0,3) C, (1,2) tied in x, (1,3) C, (2,3) tied in y. C = 4, D = 0,
     * n1 = 1, n2 = 1: tau = 4 / sqrt(5 * 5) = 0.8. */
    double bx[] = {1, 2, 2, 3}, by[] = {1, 2, 3, 3};
    CHECK_TAU(bx, by, 0.8);

    /* A pair tied in both counts in n1 and in n2: x = [1,1,2,3], y = [2,2,1,3].
     * (0,1) tied in x and y, (0,2) D, (0,3) C, (1,2) D, (1,3) C, (2,3) C.
     * C = 3, D = 2, n1 = 1, n2 = 1: tau = 1 / sqrt(5 * 5) = 0.2. */
    double jx[] = {1, 1, 2, 3}, jy[] = {2, 2, 1, 3};
    CHECK_TAU(jx, jy, 0.2);

    /* Two tie groups in x: x = [1,1,2,2], y = [1,2,3,4]. Pairs tied in x:
     * (0,1), (2,3); the other 4 are concordant. C = 4, n1 = 2, n2 = 0:
     * tau = 4 / sqrt(4 * 6) = 4 / sqrt(24) = 0.81649658092772603. */
    double gx[] = {1, 1, 2, 2};
    CHECK_TAU(gx, ty, 4.0 / sqrt(24.0));

    /* n = 2: one pair, concordant -> 1, discordant -> -1, tied in x -> NaN. */
    double p0[] = {0.5, 0.7}, p1[] = {3, 1}, p2[] = {2, 2};
    CHECK_TAU(p0, p0, 1.0);
    CHECK_TAU(p0, p1, -1.0);
    CHECK(isnan(tau_of(p2, p0, 2)), "a tied pair");
}

static void test_degenerate(void) {
    /* A constant variable: n0 - n2 = 0, so the denominator is 0 -> NaN, MD_OK. */
    double x[] = {1, 2, 3}, c[] = {5, 5, 5};
    CHECK(isnan(tau_of(x, c, 3)), "constant y");
    CHECK(isnan(tau_of(c, x, 3)), "constant x");
    CHECK(isnan(tau_of(c, c, 3)), "both constant");
    /* n = 1 and n = 0: no pairs -> NaN. */
    CHECK(isnan(tau_of(x, x, 1)), "n = 1");
    CHECK(isnan(tau_of(x, x, 0)), "n = 0");
    CHECK(isnan(tau_of(NULL, NULL, 0)), "n = 0 without arrays");

    /* Non-finite input is an error that names the element; tau is NaN. */
    double bad[] = {1, NAN, 3}, inf[] = {1, 2, INFINITY}, t = 0;
    md_error_clear();
    CHECK(md_kendall_tau_b(bad, x, 3, &t) == MD_ERR_ARG, "NaN in x accepted");
    CHECK(strstr(md_error_message(), "x[1]") && strstr(md_error_message(), "not finite"),
          "message: %s", md_error_message());
    CHECK(isnan(t), "tau after an error: %g", t);
    md_error_clear();
    CHECK(md_kendall_tau_b(x, inf, 3, &t) == MD_ERR_ARG, "inf in y accepted");
    CHECK(strstr(md_error_message(), "y[2]"), "message: %s", md_error_message());
    CHECK(md_kendall_tau_b(x, x, -1, &t) == MD_ERR_ARG, "n = -1 accepted");
    CHECK(md_kendall_tau_b(NULL, x, 3, &t) == MD_ERR_ARG, "NULL x accepted");
    CHECK(md_kendall_tau_b(x, x, 3, NULL) == MD_ERR_ARG, "NULL tau accepted");
    md_error_clear();
}

static int sgn(double d) {
    return (d > 0) - (d < 0);
}

/* The definition by sign products over every ordered pair, in doubles:
 * tau_b = sum sgn(dx) sgn(dy) / sqrt(sum sgn(dx)^2 * sum sgn(dy)^2). */
static double tau_brute(const double *x, const double *y, int n, double sums[3]) {
    double num = 0, sx = 0, sy = 0;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) {
            int dx = sgn(x[i] - x[j]), dy = sgn(y[i] - y[j]);
            num += dx * dy;
            sx += dx * dx;
            sy += dy * dy;
        }
    sums[0] = num;
    sums[1] = sx;
    sums[2] = sy;
    return sx == 0 || sy == 0 ? NAN : num / sqrt(sx * sy);
}

/* The denominator through tie groups instead: n0 - sum t (t - 1) / 2 over the
 * groups of equal values (small non-negative integers here). */
static double untied_pairs(const double *v, int n) {
    long count[1000] = {0}, tied = 0;
    for (int i = 0; i < n; i++)
        count[(int)v[i]]++;
    for (int g = 0; g < 1000; g++)
        tied += count[g] * (count[g] - 1) / 2;
    return (double)n * (n - 1) / 2 - (double)tied;
}

static void test_random_against_brute(void) {
    md_rng r;
    md_rng_seed(&r, 2024, 7);
    static const int levels[] = {2, 3, 5, 10, 1000};
    double           x[40], y[40], neg[40];
    int              nan_cases = 0, checked = 0;
    for (int trial = 0; trial < 2000; trial++) {
        int n = 2 + (int)(md_rng_uniform_double(&r) * 39);
        int mx = levels[trial % 5], my = levels[(trial / 5) % 5];
        for (int i = 0; i < n; i++) {
            x[i] = (int)(md_rng_uniform_double(&r) * mx);
            y[i] = (int)(md_rng_uniform_double(&r) * my);
            neg[i] = -y[i];
        }
        double sums[3];
        double t = tau_of(x, y, n), want = tau_brute(x, y, n, sums);
        double dx = untied_pairs(x, n), dy = untied_pairs(y, n);
        if (isnan(want)) {
            nan_cases++;
            CHECK(isnan(t) && (dx == 0 || dy == 0), "trial %d: tau %g, want NaN", trial, t);
            continue;
        }
        checked++;
        CHECK(fabs(t - want) <= 1e-12, "trial %d (n %d): tau %.17g, brute %.17g", trial, n, t,
              want);
        /* Over ordered pairs, sum sgn(dx)^2 = 2 (n0 - n1) and sum sgn(dx) sgn(dy)
         * = 2 (C - D): the tie-group counts give the same tau. */
        CHECK(sums[1] == 2 * dx && sums[2] == 2 * dy, "trial %d: %g %g untied, tie groups %g %g",
              trial, sums[1] / 2, sums[2] / 2, dx, dy);
        CHECK(fabs(t - sums[0] / 2 / sqrt(dx * dy)) <= 1e-12, "trial %d: tie-group tau", trial);
        CHECK(t >= -1 && t <= 1, "trial %d: tau %g", trial, t);
        CHECK(tau_of(y, x, n) == t, "trial %d: not symmetric", trial);
        CHECK(tau_of(x, neg, n) == -t, "trial %d: tau(x, -y) != -tau(x, y)", trial);
        CHECK(tau_of(x, x, n) == 1, "trial %d: tau(x, x) = %g", trial, tau_of(x, x, n));
    }
    /* both kinds occurred (levels = 2 with small n gives constants now and then) */
    CHECK(nan_cases > 0 && checked > 1000, "%d NaN cases, %d checked", nan_cases, checked);
}

static void test_by_epoch(void) {
    /* 3 architectures x 3 epochs; the last column [0.7, 0.8, 0.6] ranks a2 < a0 < a1.
     *   epoch 0: [0.1, 0.2, 0.3]. (0,1) C, (0,2) D (0.1 < 0.3, 0.7 > 0.6), (1,2) D:
     *            tau = (1 - 2) / 3 = -1/3.
     *   epoch 1: [0.5, 0.5, 0.3]. (0,1) tied in x, (0,2) C, (1,2) C: C = 2, n1 = 1:
     *            tau = 2 / sqrt(2 * 3) = 2 / sqrt(6) = 0.81649658092772603.
     *   epoch 2: the last column itself: 1. */
    const double acc[9] = {0.1, 0.5, 0.7, /* a0 */
                           0.2, 0.5, 0.8, /* a1 */
                           0.3, 0.3, 0.6 /* a2 */};
    double       tau[3] = {0, 0, 0};
    CHECK_OK(md_rank_tau_by_epoch(acc, 3, 3, tau));
    CHECK(fabs(tau[0] - (-1.0 / 3.0)) <= 1e-15, "tau[0] = %.17g", tau[0]);
    CHECK(fabs(tau[1] - 2.0 / sqrt(6.0)) <= 1e-15, "tau[1] = %.17g", tau[1]);
    CHECK(tau[2] == 1.0, "tau[2] = %.17g", tau[2]);
    /* The same columns through md_kendall_tau_b. */
    for (int ep = 0; ep < 3; ep++) {
        double col[3], last[3];
        for (int a = 0; a < 3; a++) {
            col[a] = acc[a * 3 + ep];
            last[a] = acc[a * 3 + 2];
        }
        CHECK(tau_of(col, last, 3) == tau[ep], "epoch %d differs", ep);
    }

    /* One epoch: tau[0] = 1; one architecture: NaN; a constant last column: NaN. */
    const double one[3] = {0.3, 0.1, 0.2};
    CHECK_OK(md_rank_tau_by_epoch(one, 3, 1, tau));
    CHECK(tau[0] == 1.0, "e = 1: %g", tau[0]);
    CHECK_OK(md_rank_tau_by_epoch(one, 1, 3, tau));
    CHECK(isnan(tau[0]) && isnan(tau[1]) && isnan(tau[2]), "k = 1");
    const double flat[6] = {0.1, 0.5, 0.2, 0.5, 0.3, 0.5};
    CHECK_OK(md_rank_tau_by_epoch(flat, 3, 2, tau));
    CHECK(isnan(tau[0]) && isnan(tau[1]), "constant last column: %g %g", tau[0], tau[1]);

    /* Bad input. */
    double bad[9];
    memcpy(bad, acc, sizeof bad);
    bad[5] = NAN; /* architecture 1, epoch index 2 */
    md_error_clear();
    CHECK(md_rank_tau_by_epoch(bad, 3, 3, tau) == MD_ERR_ARG, "NaN accuracy accepted");
    CHECK(strstr(md_error_message(), "architecture 1, epoch index 2"), "message: %s",
          md_error_message());
    CHECK(md_rank_tau_by_epoch(acc, 0, 3, tau) == MD_ERR_ARG, "k = 0 accepted");
    CHECK(md_rank_tau_by_epoch(acc, 3, 0, tau) == MD_ERR_ARG, "e = 0 accepted");
    CHECK(md_rank_tau_by_epoch(NULL, 3, 3, tau) == MD_ERR_ARG, "NULL acc accepted");
    CHECK(md_rank_tau_by_epoch(acc, 3, 3, NULL) == MD_ERR_ARG, "NULL tau accepted");
    md_error_clear();
}

/* ---- the SVG line plot ------------------------------------------------------ */

static size_t count_of(const char *s, const char *what) {
    size_t n = 0, w = strlen(what);
    for (const char *p = strstr(s, what); p; p = strstr(p + w, what))
        n++;
    return n;
}

/* Polylines in the text and the points over all of them (one comma per point). */
static int polyline_points(const char *svg, int *lines) {
    int points = 0;
    *lines = 0;
    for (const char *p = strstr(svg, "<polyline"); p; p = strstr(p + 1, "<polyline")) {
        (*lines)++;
        const char *a = strstr(p, " points=\"");
        const char *end = strstr(p, "/>");
        if (!a || !end || a > end) return -1;
        a += 9;
        for (; *a && *a != '"'; a++)
            if (*a == ',') points++;
    }
    return points;
}

static char *read_text(const char *path) {
    size_t   n = 0;
    uint8_t *b = md_test_read_file(path, &n);
    if (!b) return NULL;
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, b, n);
        s[n] = '\0';
    }
    free(b);
    return s;
}

static void check_svg_shape(const char *svg, const char *path) {
    CHECK(!strncmp(svg, "<?xml", 5) || !strncmp(svg, "<svg", 4), "%s starts: %.20s", path, svg);
    CHECK(strstr(svg, "<svg ") != NULL, "%s: no <svg", path);
    size_t len = strlen(svg);
    CHECK(len > 7 && !strcmp(svg + len - 7, "</svg>\n"), "%s does not end with </svg>", path);
    CHECK(count_of(svg, "<text") == count_of(svg, "</text>"), "%s: unbalanced <text>", path);
    CHECK(count_of(svg, "<circle") == count_of(svg, "</circle>"), "%s: unbalanced <circle>", path);
    CHECK(count_of(svg, "<g ") == count_of(svg, "</g>"), "%s: unbalanced <g>", path);
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    struct stat st;
    CHECK(stat(tmp, &st) != 0, "%s left behind", tmp);
}

static void test_plot(void) {
    char path[256];
    snprintf(path, sizeof path, "%s/tau.svg", tmpdir);
    const char *title = "Kendall's tau <vs> epoch & \"final\"";
    double      ep[5] = {1, 2, 3, 4, 5}, tau[5] = {-0.2, 0.4, 0.6, 0.8, 1.0};

    /* No NaN: one polyline through all 5 points, 5 markers, the title escaped. */
    CHECK_OK(md_svg_line_plot(path, title, "epoch", "tau_b vs final <epoch>", ep, tau, 5, -1, 1));
    char *svg = read_text(path);
    CHECK(svg != NULL, "cannot read %s", path);
    if (svg) {
        check_svg_shape(svg, path);
        CHECK(strstr(svg, "Kendall&apos;s tau &lt;vs&gt; epoch &amp; &quot;final&quot;"),
              "escaped title missing");
        CHECK(!strstr(svg, "<vs>") && !strstr(svg, "& "), "raw title text in the SVG");
        CHECK(strstr(svg, "tau_b vs final &lt;epoch&gt;"), "escaped y label missing");
        CHECK(strstr(svg, ">epoch</text>"), "x label missing");
        int lines = 0, pts = polyline_points(svg, &lines);
        CHECK(lines == 1 && pts == 5, "%d polylines, %d points (want 1, 5)", lines, pts);
        CHECK(count_of(svg, "class=\"point\"") == 5, "%zu markers",
              count_of(svg, "class=\"point\""));
        /* y ticks of [-1, 1] every 0.5; x ticks at the whole epochs */
        CHECK(strstr(svg, ">-1.0</text>") && strstr(svg, ">0.5</text>") &&
                  strstr(svg, ">1.0</text>"),
              "y tick labels missing");
        CHECK(strstr(svg, ">1</text>") && strstr(svg, ">5</text>") && !strstr(svg, ">1.5</text>"),
              "x tick labels");
        free(svg);
    }

    /* A NaN in the middle: a gap, two polylines with 4 points in all. */
    double gap[5] = {0.1, 0.3, NAN, 0.7, 0.9};
    CHECK_OK(md_svg_line_plot(path, "gap", NULL, NULL, ep, gap, 5, NAN, NAN));
    svg = read_text(path);
    CHECK(svg != NULL, "cannot read %s", path);
    if (svg) {
        check_svg_shape(svg, path);
        int lines = 0, pts = polyline_points(svg, &lines);
        CHECK(lines == 2 && pts == 4, "%d polylines, %d points (want 2, 4)", lines, pts);
        CHECK(count_of(svg, "class=\"point\"") == 4, "%zu markers",
              count_of(svg, "class=\"point\""));
        CHECK(!strstr(svg, "nan") && !strstr(svg, "NaN"), "NaN printed");
        CHECK(!strstr(svg, "class=\"xlabel\"") && !strstr(svg, "class=\"ylabel\""),
              "NULL labels drawn");
        free(svg);
    }

    /* NaN first and last, a lone point, all NaN, one point: no NaN printed. */
    double edge[5] = {NAN, 0.5, NAN, 0.6, NAN}, none[2] = {NAN, NAN}, one[1] = {0.25};
    CHECK_OK(md_svg_line_plot(path, NULL, "x", "y", ep, edge, 5, 0, 1));
    svg = read_text(path);
    if (svg) {
        int lines = 0, pts = polyline_points(svg, &lines);
        CHECK(lines == 2 && pts == 2, "edge NaNs: %d polylines, %d points", lines, pts);
        CHECK(!strstr(svg, "nan"), "NaN printed");
        free(svg);
    }
    CHECK_OK(md_svg_line_plot(path, "all NaN", "x", "y", ep, none, 2, NAN, NAN));
    svg = read_text(path);
    if (svg) {
        check_svg_shape(svg, path);
        int lines = 0, pts = polyline_points(svg, &lines);
        CHECK(lines == 0 && pts == 0, "all NaN: %d polylines, %d points", lines, pts);
        CHECK(!strstr(svg, "nan") && !strstr(svg, "inf"), "non-finite printed");
        free(svg);
    }
    CHECK_OK(md_svg_line_plot(path, "one", "x", "y", ep, one, 1, NAN, NAN));
    svg = read_text(path);
    if (svg) {
        check_svg_shape(svg, path);
        int lines = 0, pts = polyline_points(svg, &lines);
        CHECK(lines == 1 && pts == 1, "one point: %d polylines, %d points", lines, pts);
        CHECK(!strstr(svg, "nan") && !strstr(svg, "inf"), "non-finite printed");
        free(svg);
    }

    /* An unwritable path: an error that names it. */
    char bad[300];
    snprintf(bad, sizeof bad, "%s/no/such/dir/tau.svg", tmpdir);
    md_error_clear();
    CHECK(md_svg_line_plot(bad, "t", "x", "y", ep, tau, 5, -1, 1) == MD_ERR_IO,
          "unwritable path accepted");
    CHECK(strstr(md_error_message(), bad), "message does not name %s: %s", bad, md_error_message());
    /* Bad arguments name the path too. */
    md_error_clear();
    CHECK(md_svg_line_plot(path, "t", "x", "y", ep, tau, 5, 1, -1) == MD_ERR_ARG,
          "ymin > ymax accepted");
    CHECK(strstr(md_error_message(), path), "message: %s", md_error_message());
    CHECK(md_svg_line_plot(path, "t", "x", "y", ep, tau, 5, 0, INFINITY) == MD_ERR_ARG,
          "infinite ymax accepted");
    CHECK(md_svg_line_plot(path, "t", "x", "y", ep, tau, 0, -1, 1) == MD_ERR_ARG, "n = 0 accepted");
    CHECK(strstr(md_error_message(), path), "message: %s", md_error_message());
    CHECK(md_svg_line_plot(path, "t", "x", "y", NULL, tau, 5, -1, 1) == MD_ERR_ARG,
          "NULL x accepted");
    CHECK(md_svg_line_plot(NULL, "t", "x", "y", ep, tau, 5, -1, 1) == MD_ERR_ARG,
          "NULL path accepted");
    md_error_clear();
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *ent;
    while ((ent = readdir(d))) {
        if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, "..")) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, ent->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(p);
        else
            remove(p);
    }
    closedir(d);
    rmdir(dir);
}

int main(void) {
    strcpy(tmpdir, "rank_test.XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 2;
    }
    test_hand_cases();
    test_degenerate();
    test_random_against_brute();
    test_by_epoch();
    test_plot();
    if (md_test_failures == 0)
        remove_tree(tmpdir);
    else
        fprintf(stderr, "files kept in %s\n", tmpdir);
    return md_test_finish("test_rank");
}
