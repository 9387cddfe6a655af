/* A line plot as plain SVG 1.1 (no scripts, fonts or images from elsewhere):
 * title, a framed plot area with grid lines, ticks at 1/2/5 x 10^k steps with
 * their labels, axis labels, the line (one polyline per run of finite points)
 * and a marker on every point. */
#include "mdenas/plot.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "io/atomic_file.h"

#define PLOT_W    640 /* at least; wider for a long title */
#define PLOT_H    420
#define LEFT      76 /* at least: room for the y tick labels and the y label */
#define RIGHT     28
#define TOP       52 /* the title */
#define BOTTOM    60 /* the x tick labels and the x label */
#define FONT_PX   12
#define TITLE_PX  16
#define TITLE_CW  9.0 /* average width of a TITLE_PX bold character */
#define CHAR_W    7.6 /* ... and of a FONT_PX digit */
#define MAX_TICKS 64
#define COLOUR    "#1f77b4"

typedef struct {
    double lo, hi, step;
    int    decimals; /* of the tick labels, with %.*f */
    int    use_g;    /* very large or very small numbers: %g */
} axis;


/* 1, 2 or 5 times a power of ten, near span / target; span > 0 and finite. */
static double nice_step(double span, int target) {
    double raw = span / target, mag = pow(10.0, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
}

static void set_format(axis *a) {
    double big = fabs(a->lo) > fabs(a->hi) ? fabs(a->lo) : fabs(a->hi);
    a->use_g = a->step < 1e-4 || big >= 1e7;
    a->decimals = 0;
    if (a->step < 1) {
        a->decimals = (int)ceil(-log10(a->step) - 1e-9);
        if (a->decimals > 15) a->decimals = 15;
    }
}

static void tick_label(const axis *a, double v, char buf[48]) {
    if (a->use_g)
        snprintf(buf, 48, "%g", v);
    else
        snprintf(buf, 48, "%.*f", a->decimals, v);
}

/* A tenth of |v|, or 1 at zero: room around a single value. */
static double pad_of(double v) {
    return v != 0 ? fabs(v) * 0.1 : 1.0;
}

static int plotted(const double *x, const double *y, int i) {
    return isfinite(x[i]) && isfinite(y[i]);
}

static md_status plan_axes(const char *path, const double *x, const double *y, int n, double ymin,
                           double ymax, axis *ax, axis *ay) {
    int    any = 0, whole = 1;
    double xlo = 0, xhi = 1, ylo = 0, yhi = 1;
    for (int i = 0; i < n; i++) {
        if (!plotted(x, y, i)) continue;
        if (!any || x[i] < xlo) xlo = x[i];
        if (!any || x[i] > xhi) xhi = x[i];
        if (!any || y[i] < ylo) ylo = y[i];
        if (!any || y[i] > yhi) yhi = y[i];
        if (x[i] != floor(x[i]) || fabs(x[i]) > 9007199254740992.0) whole = 0;
        any = 1;
    }
    if (xlo == xhi) {
        double p = whole ? 1.0 : pad_of(xlo);
        xlo -= p;
        xhi += p;
    }
    if (!isfinite(xhi - xlo))
        return md_fail(MD_ERR_ARG, "line plot '%s': the x values span too much (%g to %g) to plot",
                       path, xlo, xhi);
    ax->lo = xlo;
    ax->hi = xhi;
    ax->step = nice_step(xhi - xlo, 6);
    if (whole && ax->step < 1) ax->step = 1;
    set_format(ax);

    int    auto_lo = isnan(ymin), auto_hi = isnan(ymax);
    double lo = auto_lo ? ylo : ymin, hi = auto_hi ? yhi : ymax;
    if (lo >= hi) { /* one end (or both) from data that lie beyond the other, or constant */
        if (auto_lo && auto_hi) {
            double p = pad_of(lo);
            lo -= p;
            hi += p;
        } else if (auto_hi) {
            hi = lo + pad_of(lo);
        } else {
            lo = hi - pad_of(hi);
        }
    }
    if (!isfinite(hi - lo))
        return md_fail(MD_ERR_ARG, "line plot '%s': the y values span too much (%g to %g) to plot",
                       path, lo, hi);
    ay->step = nice_step(hi - lo, 5);
    if (auto_lo) lo = floor(lo / ay->step) * ay->step;
    if (auto_hi) hi = ceil(hi / ay->step) * ay->step;
    ay->lo = lo;
    ay->hi = hi;
    set_format(ay);
    return MD_OK;
}

typedef struct {
    double x0, x1, y0, y1; /* plot area: left, right, top, bottom */
    axis   ax, ay;
} frame;

static double map_x(const frame *F, double v) {
    return F->x0 + (v - F->ax.lo) / (F->ax.hi - F->ax.lo) * (F->x1 - F->x0);
}

static double map_y(const frame *F, double v) {
    double t = (v - F->ay.lo) / (F->ay.hi - F->ay.lo);
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    return F->y1 - t * (F->y1 - F->y0);
}

/* The multiples of a->step inside [lo, hi] (a little slack for rounding). */
static int tick_range(const axis *a, double *first, double *last) {
    *first = ceil(a->lo / a->step - 1e-9);
    *last = floor(a->hi / a->step + 1e-9);
    return *last >= *first;
}

/* The longest tick label of an axis, in characters. */
static size_t widest_label(const axis *a) {
    char   label[48];
    double first, last;
    size_t w = 1;
    if (tick_range(a, &first, &last))
        for (int c = 0; c < MAX_TICKS && first + c <= last; c++) {
            tick_label(a, (first + c) * a->step, label);
            if (strlen(label) > w) w = strlen(label);
        }
    return w;
}

static void write_ticks(FILE *f, const frame *F) {
    char   label[48];
    double first, last;
    fputs("<g class=\"xticks\">\n", f);
    if (tick_range(&F->ax, &first, &last))
        for (int c = 0; c < MAX_TICKS && first + c <= last; c++) {
            double v = (first + c) * F->ax.step, px = map_x(F, v);
            fprintf(f,
                    "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e4e4e4\"/>"
                    "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#444444\"/>\n",
                    px, F->y0, px, F->y1, px, F->y1, px, F->y1 + 5);
            tick_label(&F->ax, v, label);
            fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">%s</text>\n", px,
                    F->y1 + 19, label);
        }
    fputs("</g>\n<g class=\"yticks\">\n", f);
    if (tick_range(&F->ay, &first, &last))
        for (int c = 0; c < MAX_TICKS && first + c <= last; c++) {
            double v = (first + c) * F->ay.step, py = map_y(F, v);
            fprintf(f,
                    "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#e4e4e4\"/>"
                    "<line x1=\"%.2f\" y1=\"%.2f\" x2=\"%.2f\" y2=\"%.2f\" stroke=\"#444444\"/>\n",
                    F->x0, py, F->x1, py, F->x0 - 5, py, F->x0, py);
            tick_label(&F->ay, v, label);
            fprintf(f, "<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"end\">%s</text>\n", F->x0 - 8,
                    py + 4, label);
        }
    fputs("</g>\n", f);
}

static void write_data(FILE *f, const frame *F, const double *x, const double *y, int n) {
    int open = 0;
    for (int i = 0; i < n; i++) {
        if (!plotted(x, y, i)) {
            if (open) fputs("\"/>\n", f);
            open = 0;
            continue;
        }
        if (!open)
            fputs("<polyline class=\"line\" fill=\"none\" stroke=\"" COLOUR
                  "\" stroke-width=\"2\" stroke-linejoin=\"round\" points=\"",
                  f);
        fprintf(f, "%s%.2f,%.2f", open ? " " : "", map_x(F, x[i]), map_y(F, y[i]));
        open = 1;
    }
    if (open) fputs("\"/>\n", f);
    for (int i = 0; i < n; i++) {
        if (!plotted(x, y, i)) continue;
        fprintf(f,
                "<circle class=\"point\" cx=\"%.2f\" cy=\"%.2f\" r=\"3.5\" fill=\"" COLOUR
                "\" stroke=\"#ffffff\" stroke-width=\"1\"><title>%g, %g</title></circle>\n",
                map_x(F, x[i]), map_y(F, y[i]), x[i], y[i]);
    }
}

md_status md_svg_line_plot(const char *path, const char *title, const char *xlabel,
                           const char *ylabel, const double *x, const double *y, int n, double ymin,
                           double ymax) {
    if (!path || !*path) return md_fail(MD_ERR_ARG, "line plot: no path");
    if (n < 1) return md_fail(MD_ERR_ARG, "line plot '%s': %d points (need >= 1)", path, n);
    if (!x || !y) return md_fail(MD_ERR_ARG, "line plot '%s': no x or no y values", path);
    if (isinf(ymin) || isinf(ymax) || (!isnan(ymin) && !isnan(ymax) && !(ymin < ymax)))
        return md_fail(MD_ERR_ARG,
                       "line plot '%s': y range [%g, %g] (need ymin < ymax, finite, or NAN for "
                       "the data's)",
                       path, ymin, ymax);
    frame F;
    memset(&F, 0, sizeof F);
    MD_TRY(plan_axes(path, x, y, n, ymin, ymax, &F.ax, &F.ay));
    double width = PLOT_W, height = PLOT_H;
    double title_w = 2 * 16 + (title ? strlen(title) : 0) * TITLE_CW;
    if (width < title_w) width = title_w;
    /* the y label's centre left of the widest y tick label */
    double label_x = 14, tick_w = widest_label(&F.ay) * CHAR_W;
    F.x0 = LEFT;
    if (F.x0 < label_x + 16 + tick_w + 8) F.x0 = label_x + 16 + tick_w + 8;
    if (width < F.x0 + 200 + RIGHT) width = F.x0 + 200 + RIGHT;
    F.x1 = width - RIGHT;
    F.y0 = TOP;
    F.y1 = height - BOTTOM;

    md_atomic_file a;
    MD_TRY(md_atomic_open(&a, path));
    FILE *f = a.f;
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%.0f\" "
            "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Helvetica, "
            "Arial, sans-serif\" font-size=\"%d\">\n",
            width, height, width, height, FONT_PX);
    fprintf(f, "<rect x=\"0\" y=\"0\" width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n");
    if (title) {
        fprintf(f,
                "<text class=\"title\" x=\"%.2f\" y=\"30\" text-anchor=\"middle\" "
                "font-size=\"%d\" font-weight=\"bold\">",
                (F.x0 + F.x1) / 2, TITLE_PX);
        md_svg_text(f, title);
        fputs("</text>\n", f);
    }
    write_ticks(f, &F);
    fprintf(f,
            "<rect class=\"frame\" x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" "
            "fill=\"none\" stroke=\"#444444\"/>\n",
            F.x0, F.y0, F.x1 - F.x0, F.y1 - F.y0);
    if (xlabel) {
        fprintf(f, "<text class=\"xlabel\" x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\">",
                (F.x0 + F.x1) / 2, F.y1 + 42);
        md_svg_text(f, xlabel);
        fputs("</text>\n", f);
    }
    if (ylabel) {
        double cy = (F.y0 + F.y1) / 2;
        fprintf(f,
                "<text class=\"ylabel\" x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" "
                "transform=\"rotate(-90 %.2f %.2f)\">",
                label_x + 4, cy, label_x + 4, cy);
        md_svg_text(f, ylabel);
        fputs("</text>\n", f);
    }
    write_data(f, &F, x, y, n);
    fputs("</svg>\n", f);
    return md_atomic_commit(&a);
}
