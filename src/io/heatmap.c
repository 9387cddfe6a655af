/* The picture of how p evolved: an SVG heatmap of the final p with a sparkline
 * of p over the periods in every cell. Plain SVG 1.1 (no scripts, no fonts or
 * images from elsewhere), so any browser or viewer opens it. */
#include "mdenas/runlog.h"
#include "mdenas/plot.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "io/atomic_file.h"

#define CELL_W      72
#define CELL_H      40
#define MARGIN      16
#define FONT_PX     11
#define CHAR_W      6.6 /* average width of a FONT_PX sans-serif character */
#define PANEL_GAP   28
#define LEGEND_W    200
#define HEADER_TILT 40.0 /* degrees, for op names wider than a cell */

typedef struct {
    const md_heatmap *h;
    double            vmax; /* colour and sparkline scale: largest finite p in hist */
    double            label_w, header_h, width, height;
    int               tilt; /* op names drawn rotated */
} layout;

static double p_at(const md_heatmap *h, int t, int g, int e, int op) {
    size_t row = ((size_t)t * h->groups + g) * h->edges_per_group + e;
    return h->hist[row * h->k + op];
}

/* White -> #6baed6 -> #08306b: the light half of a "Blues" colour map. */
static void colour_of(double v, double vmax, char out[8]) {
    static const double stops[3][3] = {{255, 255, 255}, {107, 174, 214}, {8, 48, 107}};
    if (!isfinite(v)) {
        strcpy(out, "#cccccc");
        return;
    }
    double t = v / vmax;
    t = t < 0 ? 0 : t > 1 ? 1 : t;
    int    seg = t < 0.5 ? 0 : 1;
    double f = t < 0.5 ? t * 2 : (t - 0.5) * 2;
    int    rgb[3];
    for (int c = 0; c < 3; c++)
        rgb[c] = (int)lround(stops[seg][c] + f * (stops[seg + 1][c] - stops[seg][c]));
    snprintf(out, 8, "#%02x%02x%02x", rgb[0], rgb[1], rgb[2]);
}

/* XML text: the five specials escaped, control characters dropped. */
void md_svg_text(FILE *f, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&':
            fputs("&amp;", f);
            break;
        case '<':
            fputs("&lt;", f);
            break;
        case '>':
            fputs("&gt;", f);
            break;
        case '"':
            fputs("&quot;", f);
            break;
        case '\'':
            fputs("&apos;", f);
            break;
        default:
            /* XML 1.0 forbids most control characters even when escaped. */
            if ((unsigned char)*s >= 0x20 || *s == '\t' || *s == '\n') fputc(*s, f);
        }
    }
}

static const char *edge_label(const md_heatmap *h, int g, int e, char buf[32]) {
    if (h->edge_names && h->edge_names[g * h->edges_per_group + e])
        return h->edge_names[g * h->edges_per_group + e];
    snprintf(buf, 32, "edge %d", e);
    return buf;
}

static md_status check_args(const md_heatmap *h) {
    if (!h || !h->hist || !h->op_names)
        return md_fail(MD_ERR_ARG, "heatmap: no history or no op names");
    if (h->k < 1 || h->groups < 1 || h->edges_per_group < 1 || h->periods < 1)
        return md_fail(MD_ERR_ARG, "heatmap: %d ops, %d groups, %d edges, %d periods (each >= 1)",
                       h->k, h->groups, h->edges_per_group, h->periods);
    for (int i = 0; i < h->k; i++)
        if (!h->op_names[i]) return md_fail(MD_ERR_ARG, "heatmap: op %d has no name", i);
    return MD_OK;
}

static void plan_layout(const md_heatmap *h, layout *L) {
    memset(L, 0, sizeof *L);
    L->h = h;
    size_t n = (size_t)h->periods * h->groups * h->edges_per_group * h->k;
    for (size_t i = 0; i < n; i++)
        if (isfinite(h->hist[i]) && h->hist[i] > L->vmax) L->vmax = h->hist[i];
    if (!(L->vmax > 0)) L->vmax = 1.0;

    char   buf[32];
    size_t label_chars = 6;
    for (int g = 0; g < h->groups; g++)
        for (int e = 0; e < h->edges_per_group; e++) {
            size_t c = strlen(edge_label(h, g, e, buf));
            if (c > label_chars) label_chars = c;
        }
    L->label_w = label_chars * CHAR_W + 12;

    size_t op_chars = 1;
    for (int i = 0; i < h->k; i++)
        if (strlen(h->op_names[i]) > op_chars) op_chars = strlen(h->op_names[i]);
    double op_px = op_chars * CHAR_W, rad = HEADER_TILT * 3.14159265358979 / 180.0, overhang = 0;
    L->tilt = op_px > CELL_W - 6;
    if (L->tilt) {
        L->header_h = op_px * sin(rad) + 16;
        overhang = op_px * cos(rad) - CELL_W / 2.0;
    } else {
        L->header_h = 20;
    }
    double grid_w = MARGIN + L->label_w + (double)h->k * CELL_W + (overhang > 0 ? overhang : 0);
    double title_w = 2 * MARGIN + strlen(h->title ? h->title : "") * 10.0;
    double min_w = 2 * MARGIN + 560; /* the subtitle and the legend */
    L->width = grid_w + MARGIN;
    if (L->width < title_w) L->width = title_w;
    if (L->width < min_w) L->width = min_w;
    double panel_h = 22 + L->header_h + (double)h->edges_per_group * CELL_H;
    L->height = 88 + h->groups * panel_h + (h->groups - 1) * PANEL_GAP + MARGIN;
}

static void write_header(FILE *f, const layout *L) {
    const md_heatmap *h = L->h;
    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"%.0f\" "
            "height=\"%.0f\" viewBox=\"0 0 %.0f %.0f\" font-family=\"DejaVu Sans, Helvetica, "
            "Arial, sans-serif\" font-size=\"%d\">\n",
            L->width, L->height, L->width, L->height, FONT_PX);
    fprintf(f, "<defs><linearGradient id=\"scale\" x1=\"0\" x2=\"1\" y1=\"0\" y2=\"0\">"
               "<stop offset=\"0\" stop-color=\"#ffffff\"/><stop offset=\"0.5\" "
               "stop-color=\"#6baed6\"/><stop offset=\"1\" stop-color=\"#08306b\"/>"
               "</linearGradient></defs>\n");
    fprintf(f, "<rect x=\"0\" y=\"0\" width=\"100%%\" height=\"100%%\" fill=\"#ffffff\"/>\n");
    fprintf(f, "<text x=\"%d\" y=\"30\" font-size=\"18\" font-weight=\"bold\">", MARGIN);
    md_svg_text(f, h->title ? h->title : "Operation probabilities over the search");
    fprintf(f,
            "</text>\n<text x=\"%d\" y=\"50\" font-size=\"12\" fill=\"#444444\">Colour and "
            "number: p after period %d. Line: p over periods 1..%d. Outlined: the most "
            "likely op of each edge.</text>\n",
            MARGIN, h->periods, h->periods);
    int lx = MARGIN + 40;
    fprintf(f,
            "<text x=\"%d\" y=\"75\" text-anchor=\"end\">p = 0</text>\n"
            "<rect x=\"%d\" y=\"64\" width=\"%d\" height=\"14\" fill=\"url(#scale)\" "
            "stroke=\"#888888\" stroke-width=\"0.5\"/>\n"
            "<text x=\"%d\" y=\"75\">%.3g</text>\n",
            lx - 4, lx, LEGEND_W, lx + LEGEND_W + 4, L->vmax);
}

/* One cell: its colour, the final value, a sparkline of p over the periods. */
static void write_cell(FILE *f, const layout *L, int g, int e, int op, double x, double y,
                       int best) {
    const md_heatmap *h = L->h;
    double            v = p_at(h, h->periods - 1, g, e, op), first = p_at(h, 0, g, e, op);
    char              fill[8], label[32];
    colour_of(v, L->vmax, fill);
    int dark = isfinite(v) && v / L->vmax > 0.55;
    fprintf(f,
            "<rect class=\"cell\" x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" fill=\"%s\" "
            "stroke=\"#ffffff\"><title>",
            x, y, CELL_W, CELL_H, fill);
    md_svg_text(f, h->group_names && h->group_names[g] ? h->group_names[g] : "");
    fputs(" ", f);
    md_svg_text(f, edge_label(h, g, e, label));
    fputs(", ", f);
    md_svg_text(f, h->op_names[op]);
    fprintf(f, ": p = %.4f (period 1: %.4f)</title></rect>\n", v, first);
    if (best)
        fprintf(f,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"%d\" height=\"%d\" fill=\"none\" "
                "stroke=\"#e6550d\" stroke-width=\"2.5\"/>\n",
                x + 1.5, y + 1.5, CELL_W - 3, CELL_H - 3);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" fill=\"%s\">%.3f</text>\n", x + 4,
            y + 12, dark ? "#ffffff" : "#222222", v);

    /* The line spans the cell below the number; long runs are subsampled to
     * about two points per pixel. */
    double x0 = x + 4, x1 = x + CELL_W - 4, y0 = y + CELL_H - 4, y1 = y + 16;
    int    points = h->periods < 2 * CELL_W ? h->periods : 2 * CELL_W;
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.3\" points=\"",
            dark ? "#fdd0a2" : "#d94801");
    for (int i = 0; i < points; i++) {
        int    t = points == 1 ? 0 : (int)lround((double)i * (h->periods - 1) / (points - 1));
        double p = p_at(h, t, g, e, op);
        if (!isfinite(p)) continue;
        double px = points == 1 ? x0 : x0 + (x1 - x0) * i / (points - 1);
        double py = y0 - (y0 - y1) * (p < 0 ? 0 : p > L->vmax ? 1 : p / L->vmax);
        fprintf(f, "%.1f,%.1f ", px, py);
        if (points == 1) fprintf(f, "%.1f,%.1f ", x1, py);
    }
    fputs("\"/>\n", f);
}

static double write_panel(FILE *f, const layout *L, int g, double top) {
    const md_heatmap *h = L->h;
    double            grid_x = MARGIN + L->label_w, grid_y = top + 22 + L->header_h;
    fprintf(f, "<text x=\"%d\" y=\"%.1f\" font-size=\"14\" font-weight=\"bold\">", MARGIN,
            top + 14);
    if (h->group_names && h->group_names[g])
        md_svg_text(f, h->group_names[g]);
    else
        fprintf(f, "group %d", g);
    fputs("</text>\n", f);
    for (int op = 0; op < h->k; op++) {
        double cx = grid_x + (op + 0.5) * CELL_W, by = grid_y - 6;
        if (L->tilt)
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" transform=\"rotate(-%.0f %.1f %.1f)\">", cx - 4,
                    by, HEADER_TILT, cx - 4, by);
        else
            fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">", cx, by);
        md_svg_text(f, h->op_names[op]);
        fputs("</text>\n", f);
    }
    for (int e = 0; e < h->edges_per_group; e++) {
        double y = grid_y + (double)e * CELL_H;
        char   buf[32];
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">", grid_x - 8,
                y + CELL_H / 2.0 + 4);
        md_svg_text(f, edge_label(h, g, e, buf));
        fputs("</text>\n", f);
        int best = 0;
        for (int op = 1; op < h->k; op++)
            if (p_at(h, h->periods - 1, g, e, op) > p_at(h, h->periods - 1, g, e, best)) best = op;
        for (int op = 0; op < h->k; op++)
            write_cell(f, L, g, e, op, grid_x + (double)op * CELL_W, y, op == best);
    }
    return grid_y + (double)h->edges_per_group * CELL_H + PANEL_GAP;
}

md_status md_heatmap_write_svg(const md_heatmap *h, const char *path) {
    MD_TRY(check_args(h));
    layout L;
    plan_layout(h, &L);
    md_atomic_file a;
    MD_TRY(md_atomic_open(&a, path));
    write_header(a.f, &L);
    double top = 88;
    for (int g = 0; g < h->groups; g++)
        top = write_panel(a.f, &L, g, top);
    fputs("</svg>\n", a.f);
    return md_atomic_commit(&a);
}
