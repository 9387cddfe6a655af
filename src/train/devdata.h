/* Private to src/train: an in-memory dataset held in backend memory, and the
 * loader callbacks (data.h's md_loader_device) that make its batches there with
 * md_backend_augment_u8. The images, labels and normalisation table are
 * uploaded once; each epoch's order once per epoch; a batch is one op that
 * writes normalised floats into a buffer of the backend's. */
#ifndef MDENAS_TRAIN_DEVDATA_H
#define MDENAS_TRAIN_DEVDATA_H

#include "mdenas/backend.h"
#include "mdenas/data.h"

/* A dataset's bytes, labels and table in backend memory. be points at the
 * backend in use (it may be replaced by an equal one; both must address the
 * memory). ds must stay valid while the set exists. */
typedef struct md_devset md_devset;
md_status md_devset_create(md_backend *const *be, const md_dataset *ds, md_devset **out);
void      md_devset_destroy(md_devset *s);

/* One loader's device side: its order (n positions) and a batch buffer of
 * max_rows rows, over set (which must outlive it), with augmentation aug. */
typedef struct md_devdata md_devdata;
md_status md_devdata_create(md_devset *set, int n, int max_rows, md_augment aug,
                            md_devdata **out);
void      md_devdata_destroy(md_devdata *d);
/* The callbacks for md_loader_config.device (valid while d exists). */
const md_loader_device *md_devdata_callbacks(const md_devdata *d);

#endif
