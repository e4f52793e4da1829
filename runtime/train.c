/* cnnc train: the training loop around a generated model. It reads an IDX
 * data set (images and class labels, plain or gzip), scales the pixels to
 * [-1, 1] (x / 127.5 - 1), shuffles every epoch with
 * the seed, trains with the model's train_step, evaluates after every
 * epoch, applies the schedule, logs a CSV line, and saves a checkpoint:
 * the weights under their names plus the optimizer's state under names
 * starting with "__", which models load past. Files are written to a
 * temporary name and renamed, so a checkpoint is never half written. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cnnc_runtime.h"

typedef struct Options {
  const char *data, *save, *resume, *weights, *except, *log;
  int epochs;
  double lr;
  long long seed;
  int quiet;
} Options;

typedef struct Data {
  float *x; /* normalized images, n × size */
  unsigned char *y;
  int64_t n, size;
} Data;

static int fail(const char *msg) {
  fprintf(stderr, "cnnc: %s\n", msg);
  return 1;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* DIR/NAME.gz, or DIR/NAME when that is what exists. */
static int read_idx(const char *dir, const char *name, rt_idx *out, char *err,
                    size_t errlen) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.gz", dir, name);
  if (access(path, R_OK) != 0)
    snprintf(path, sizeof path, "%s/%s", dir, name);
  return rt_idx_read(path, out, err, errlen);
}

static int load_split(const rt_model *m, const Options *o, const char *prefix,
                      Data *d, char *err, size_t errlen) {
  char name[64];
  rt_idx img = {0}, lab = {0};
  snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
  if (read_idx(o->data, name, &img, err, errlen))
    return -1;
  snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
  if (read_idx(o->data, name, &lab, err, errlen)) {
    rt_idx_free(&img);
    return -1;
  }
  int64_t per = img.ndim >= 2 && img.dims[0] ? img.count / img.dims[0] : 0;
  int ok = img.type == RT_IDX_U8 && lab.type == RT_IDX_U8 && img.ndim >= 2 &&
           lab.ndim == 1 && lab.dims[0] == img.dims[0];
  if (ok && img.dims[0] == 0) {
    snprintf(err, errlen, "%s/%s-images: no images", o->data, prefix);
    ok = 0;
  } else if (!ok) {
    snprintf(err, errlen,
             "%s/%s-*: expected unsigned-byte images and one label per image",
             o->data, prefix);
  } else if (per != m->channels * m->height * m->width) {
    snprintf(err, errlen,
             "%s/%s-images: images of %lld values, but the model's input is "
             "[%lld, %lld, %lld]",
             o->data, prefix, (long long)per, (long long)m->channels,
             (long long)m->height, (long long)m->width);
    ok = 0;
  }
  for (int64_t i = 0; ok && i < lab.count; i++)
    if (((unsigned char *)lab.data)[i] >= m->classes) {
      snprintf(err, errlen,
               "%s/%s-labels: label %d of image %lld is not one "
               "of the model's %lld classes",
               o->data, prefix, ((unsigned char *)lab.data)[i], (long long)i,
               (long long)m->classes);
      ok = 0;
    }
  if (ok) {
    d->n = img.dims[0];
    d->size = per;
    d->x = malloc(sizeof(float) * (size_t)(d->n * per));
    d->y = malloc((size_t)d->n);
    if (!d->x || !d->y) {
      snprintf(err, errlen, "out of memory for the data set");
      ok = 0;
    } else {
      for (int64_t i = 0; i < d->n * per; i++)
        d->x[i] = ((unsigned char *)img.data)[i] / 255.0f;
      memcpy(d->y, lab.data, (size_t)d->n);
    }
  }
  rt_idx_free(&img);
  rt_idx_free(&lab);
  return ok ? 0 : -1;
}

static void normalize(Data *d, double mean, double sd) {
  for (int64_t i = 0; i < d->n * d->size; i++)
    d->x[i] = (float)((d->x[i] - mean) / sd);
}

/* --- checkpoints -----------------------------------------------------------
 */

static int matches(const char *name, const char *pattern) {
  if (!pattern)
    return 0;
  size_t n = strlen(pattern);
  return strncmp(name, pattern, n) == 0 && (name[n] == 0 || name[n] == '.');
}

/* Copies the tensors of a file into the state, by name, strictly: every
 * parameter present with its dtype and shape (num_batches_tracked may be
 * absent; names matching --except keep their initial values), nothing
 * unknown but cnnc's own "__" tensors. Only right after init, before any
 * forward pass: the weights that pass keeps packed are made by its first
 * call after init (docs/generated-code.md). */
static int load_weights(const rt_model *m, void *s, const char *path,
                        const char *except, rt_tensors *t, char *err,
                        size_t errlen) {
  if (rt_safetensors_read(path, t, err, errlen))
    return -1;
  for (int i = 0; i < t->n; i++) {
    const rt_tensor *x = &t->v[i];
    if (strncmp(x->name, "__", 2) == 0)
      continue;
    int known = 0;
    for (int j = 0; j < m->nparams && !known; j++)
      known = strcmp(m->params[j].name, x->name) == 0;
    if (!known) {
      snprintf(err, errlen,
               "%s: unexpected tensor '%s': the model has no such tensor", path,
               x->name);
      return -1;
    }
  }
  for (int j = 0; j < m->nparams; j++) {
    const rt_param *p = &m->params[j];
    if (matches(p->name, except))
      continue;
    const rt_tensor *x = rt_tensors_find(t, p->name);
    if (!x) {
      if (strstr(p->name, "num_batches_tracked"))
        continue;
      snprintf(err, errlen, "%s: missing tensor '%s'", path, p->name);
      return -1;
    }
    int ok = x->dtype == (p->is_int ? RT_I64 : RT_F32) && x->ndim == p->ndim;
    for (int k = 0; ok && k < p->ndim; k++)
      ok = x->shape[k] == p->shape[k];
    if (!ok) {
      snprintf(err, errlen,
               "%s: tensor '%s' is %s with another shape than "
               "the model's",
               path, p->name, rt_dtype_name(x->dtype));
      return -1;
    }
    if (p->is_int)
      memcpy(m->i64(s) + p->offset, x->data, sizeof(int64_t) * p->numel);
    else
      memcpy(m->f32(s) + p->offset, x->data, sizeof(float) * p->numel);
  }
  return 0;
}

static int save_checkpoint(const rt_model *m, void *s, const char *path,
                           int epoch, char *err, size_t errlen) {
  rt_tensors t = {0};
  int rc = 0;
  for (int j = 0; j < m->nparams && !rc; j++) {
    const rt_param *p = &m->params[j];
    const void *src = p->is_int ? (const void *)(m->i64(s) + p->offset)
                                : (const void *)(m->f32(s) + p->offset);
    rc = rt_tensors_add(&t, p->name, p->is_int ? RT_I64 : RT_F32, p->ndim,
                        p->shape, src);
  }
  int64_t n = (int64_t)m->f32_count;
  if (!rc && m->m32)
    rc = rt_tensors_add(&t, "__optimizer.m", RT_F32, 1, &n, m->m32(s));
  if (!rc && m->v32 && m->v32(s))
    rc = rt_tensors_add(&t, "__optimizer.v", RT_F32, 1, &n, m->v32(s));
  if (!rc)
    rc = rt_tensors_add(&t, "__optimizer.step", RT_I64, 0, NULL, m->step_of(s));
  if (!rc)
    rc = rt_tensors_add(&t, "__optimizer.lr", RT_F32, 0, NULL, m->lr_of(s));
  char buf[32];
  snprintf(buf, sizeof buf, "%d", epoch);
  if (!rc)
    rc = rt_tensors_set_meta(&t, "epoch", buf);
  if (rc)
    snprintf(err, errlen, "out of memory while saving %s", path);
  else
    rc = rt_safetensors_write(path, &t, err, errlen);
  rt_tensors_free(&t);
  return rc;
}

/* Restores weights and optimizer state; returns the epochs done, or -1. */
static int resume(const rt_model *m, void *s, const char *path, char *err,
                  size_t errlen) {
  rt_tensors t = {0};
  int done = -1;
  if (load_weights(m, s, path, NULL, &t, err, errlen) == 0) {
    const rt_tensor *mm = rt_tensors_find(&t, "__optimizer.m");
    const rt_tensor *vv = rt_tensors_find(&t, "__optimizer.v");
    const rt_tensor *st = rt_tensors_find(&t, "__optimizer.step");
    const rt_tensor *lr = rt_tensors_find(&t, "__optimizer.lr");
    const char *ep = rt_tensors_get_meta(&t, "epoch");
    size_t bytes = sizeof(float) * m->f32_count;
    char *end = NULL;
    long epoch = ep ? strtol(ep, &end, 10) : -1;
    if (!mm || mm->nbytes != bytes || !st || st->dtype != RT_I64 ||
        st->nbytes != sizeof(int64_t) || !lr || lr->dtype != RT_F32 ||
        lr->nbytes != sizeof(float) || !ep ||
        (m->v32(s) && (!vv || vv->nbytes != bytes))) {
      snprintf(err, errlen,
               "%s: not a checkpoint of this model's training "
               "(no optimizer state, or __optimizer.step or __optimizer.lr "
               "not a scalar)",
               path);
    } else if (end == ep || *end || epoch < 0 || epoch > INT_MAX) {
      snprintf(err, errlen,
               "%s: the checkpoint's epoch must be a non-negative integer",
               path);
    } else {
      memcpy(m->m32(s), mm->data, bytes);
      if (m->v32(s))
        memcpy(m->v32(s), vv->data, bytes);
      *m->step_of(s) = *(const int64_t *)st->data;
      m->set_lr(s, *(const float *)lr->data);
      done = (int)epoch;
    }
  }
  rt_tensors_free(&t);
  return done;
}

/* --- the loop --------------------------------------------------------------
 */

static uint64_t mix(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

static double accuracy(const rt_model *m, void *s, const Data *d, int64_t n,
                       float *logits) {
  int64_t right = 0;
  for (int64_t at = 0; at < n; at += m->batch) {
    int count = (int)(n - at < m->batch ? n - at : m->batch);
    m->forward(s, count, d->x + at * d->size, logits);
    for (int i = 0; i < count; i++) {
      const float *l = logits + (int64_t)i * m->classes;
      int64_t best = 0;
      for (int64_t k = 1; k < m->classes; k++)
        if (l[k] > l[best])
          best = k;
      right += best == d->y[at + i];
    }
  }
  return n ? (double)right / (double)n : 0;
}

static void progress(const Options *o, int tty, int epoch, int epochs,
                     int64_t done, int64_t total, double loss, double t0) {
  double secs = now() - t0, rate = secs > 0 ? (double)done / secs : 0;
  double eta = rate > 0 ? (double)(total - done) / rate : 0;
  if (o->quiet)
    return;
  if (tty) {
    int width = 30, fill = (int)(width * done / (total ? total : 1));
    fprintf(
        stderr,
        "\r  epoch %d/%d [%.*s%*s] %3d%%  loss %.4f  %6.0f img/s  ETA %d:%02d ",
        epoch + 1, epochs, fill, "==============================", width - fill,
        "", (int)(100 * done / (total ? total : 1)), loss, rate, (int)eta / 60,
        (int)eta % 60);
  } else {
    fprintf(stderr, "  epoch %d/%d: %lld/%lld images, loss %.4f, %.0f img/s\n",
            epoch + 1, epochs, (long long)done, (long long)total, loss, rate);
  }
  fflush(stderr);
}

static void parse(int argc, char **argv, const rt_model *m, Options *o) {
  o->epochs = m->epochs;
  o->lr = -1;
  o->seed = -1;
  for (int i = 1; i < argc; i++) {
    char *eq = strchr(argv[i], '=');
    if (!eq)
      continue;
    *eq = 0;
    const char *k = argv[i], *v = eq + 1;
    if (!strcmp(k, "data"))
      o->data = v;
    else if (!strcmp(k, "save"))
      o->save = v;
    else if (!strcmp(k, "resume"))
      o->resume = v;
    else if (!strcmp(k, "weights"))
      o->weights = v;
    else if (!strcmp(k, "except"))
      o->except = v;
    else if (!strcmp(k, "log"))
      o->log = v;
    else if (!strcmp(k, "epochs"))
      o->epochs = atoi(v);
    else if (!strcmp(k, "lr"))
      o->lr = atof(v);
    else if (!strcmp(k, "seed"))
      o->seed = atoll(v);
    else if (!strcmp(k, "quiet"))
      o->quiet = atoi(v);
  }
}

int rt_train_main(const rt_model *m, int argc, char **argv) {
  Options o = {0};
  char err[1024];
  parse(argc, argv, m, &o);
  uint64_t seed = o.seed >= 0 ? (uint64_t)o.seed : m->seed;
  Data train = {0}, test = {0};
  if (load_split(m, &o, "train", &train, err, sizeof err) ||
      load_split(m, &o, "t10k", &test, err, sizeof err))
    return fail(err);
  /* Pixels scaled to [-1, 1]: a fixed rule that a program using the model
   * later can repeat without knowing the training set. */
  double mean = 0.5, sd = 0.5;
  normalize(&train, mean, sd);
  normalize(&test, mean, sd);
  void *s = m->state ? m->state : rt_state_alloc(m->state_size);
  float *batch_x = malloc(sizeof(float) * (size_t)(m->batch * train.size));
  int64_t *batch_y = malloc(sizeof(int64_t) * (size_t)m->batch);
  float *logits = malloc(sizeof(float) * (size_t)(m->batch * m->classes));
  int64_t *order = malloc(sizeof(int64_t) * (size_t)train.n);
  if (!s || !batch_x || !batch_y || !logits || !order)
    return fail("out of memory");
  m->init(s, seed);
  int start = 0;
  rt_tensors w = {0};
  if (o.weights && load_weights(m, s, o.weights, o.except, &w, err, sizeof err))
    return fail(err);
  rt_tensors_free(&w);
  if (o.resume && (start = resume(m, s, o.resume, err, sizeof err)) < 0)
    return fail(err);
  if (o.lr > 0 && !o.resume)
    m->set_lr(s, (float)o.lr);
  FILE *log = NULL;
  if (o.log) {
    log = fopen(o.log, start ? "a" : "w");
    if (!log) {
      snprintf(err, sizeof err, "cannot write %s: %s", o.log, strerror(errno));
      return fail(err);
    }
    if (!start)
      fprintf(log, "epoch,loss,train_accuracy,test_accuracy,lr,seconds\n");
  }
  int tty = isatty(2);
  fprintf(stderr,
          "cnnc: training %s on %lld images (%lld test), batch %d, "
          "%d epochs\n",
          m->name, (long long)train.n, (long long)test.n, m->batch, o.epochs);
  double test_acc = 0;
  for (int epoch = start; epoch < o.epochs; epoch++) {
    double t0 = now(), loss_sum = 0;
    uint64_t rs = seed * 1000003u + (uint64_t)epoch;
    for (int64_t i = 0; i < train.n; i++)
      order[i] = i;
    for (int64_t i = train.n - 1; i > 0; i--) {
      int64_t j = (int64_t)(mix(&rs) % (uint64_t)(i + 1)), tmp = order[i];
      order[i] = order[j];
      order[j] = tmp;
    }
    int64_t steps = (train.n + m->batch - 1) / m->batch, every = steps / 10;
    for (int64_t step = 0; step < steps; step++) {
      int64_t at = step * m->batch;
      int count = (int)(train.n - at < m->batch ? train.n - at : m->batch);
      for (int i = 0; i < count; i++) {
        int64_t k = order[at + i];
        memcpy(batch_x + (int64_t)i * train.size, train.x + k * train.size,
               sizeof(float) * (size_t)train.size);
        batch_y[i] = train.y[k];
      }
      float loss = m->train_step(s, count, batch_x, batch_y);
      if (!isfinite(loss)) {
        if (tty && !o.quiet)
          fputc('\n', stderr);
        fprintf(stderr,
                "cnnc: the loss became %s at epoch %d, step %lld; "
                "training stopped%s%s%s\n",
                isnan(loss) ? "NaN" : "infinite", epoch + 1,
                (long long)step + 1, o.save ? " (the last checkpoint, " : "",
                o.save ? o.save : "", o.save ? ", is intact)" : "");
        return 1;
      }
      loss_sum += loss;
      if ((tty && (step % 8 == 0 || step == steps - 1)) ||
          (!tty && every && step % every == every - 1))
        progress(&o, tty, epoch, o.epochs, at + count, train.n,
                 loss_sum / (double)(step + 1), t0);
    }
    if (tty && !o.quiet)
      fputc('\n', stderr);
    double train_acc =
        accuracy(m, s, &train, train.n < 10000 ? train.n : 10000, logits);
    test_acc = accuracy(m, s, &test, test.n, logits);
    float lr = *m->lr_of(s);
    m->end_epoch(s, epoch, o.epochs, (float)(1 - test_acc));
    double secs = now() - t0;
    fprintf(stderr,
            "cnnc: epoch %d/%d: loss %.4f, train accuracy %.2f%%, test "
            "accuracy %.2f%%, lr %g, %.1f s\n",
            epoch + 1, o.epochs, loss_sum / (double)steps, 100 * train_acc,
            100 * test_acc, lr, secs);
    if (log) {
      fprintf(log, "%d,%.6f,%.6f,%.6f,%g,%.3f\n", epoch + 1,
              loss_sum / (double)steps, train_acc, test_acc, lr, secs);
      fflush(log);
    }
    if (o.save && save_checkpoint(m, s, o.save, epoch + 1, err, sizeof err))
      return fail(err);
  }
  if (log)
    fclose(log);
  printf("test accuracy: %.2f%%\n", 100 * test_acc);
  if (s != m->state)
    free(s);
  free(batch_x);
  free(batch_y);
  free(logits);
  free(order);
  free(train.x);
  free(train.y);
  free(test.x);
  free(test.y);
  return 0;
}
