/* classify: a product's use of a model cnnc compiled. It loads the weights
 * that `cnnc train` saved, reads Fashion-MNIST test images (IDX, not
 * compressed), and prints what lenet5 sees in each. The model needs
 * nothing but lenet5.c, lenet5.h and libm; this program adds stdio and
 * malloc for the files.
 *
 *   classify WEIGHTS.safetensors IMAGES-idx3-ubyte LABELS-idx1-ubyte [N] */
#include <stdio.h>
#include <stdlib.h>

#include "lenet5.h"

static const char *const classes[10] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

/* The whole file in memory, or NULL. */
static unsigned char *slurp(const char *path, long *size) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf = NULL;
  if (f && fseek(f, 0, SEEK_END) == 0 && (*size = ftell(f)) > 0 &&
      fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)*size)) &&
      fread(buf, 1, (size_t)*size, f) != (size_t)*size) {
    free(buf);
    buf = NULL;
  }
  if (f)
    fclose(f);
  return buf;
}

static long be32(const unsigned char *p) {
  return (long)p[0] << 24 | (long)p[1] << 16 | (long)p[2] << 8 | (long)p[3];
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: classify WEIGHTS IMAGES LABELS [N]\n");
    return 2;
  }
  long n = argc > 4 ? atol(argv[4]) : 8;
  long wsize, isize, lsize;
  unsigned char *weights = slurp(argv[1], &wsize);
  unsigned char *images = slurp(argv[2], &isize);
  unsigned char *labels = slurp(argv[3], &lsize);
  if (!weights || !images || !labels) {
    fprintf(stderr, "classify: cannot read %s\n",
            !weights ? argv[1] : !images ? argv[2] : argv[3]);
    return 1;
  }
  /* IDX: magic 0x00000803, count, rows, cols, then one byte per pixel */
  if (isize < 16 || be32(images) != 0x803 || be32(images + 8) != 28 ||
      be32(images + 12) != 28 || lsize < 8 || be32(labels) != 0x801) {
    fprintf(stderr, "classify: expected 28x28 IDX images and IDX labels\n");
    return 1;
  }
  long count = be32(images + 4);
  if (n > count || 16 + count * 784 > isize || 8 + count > lsize)
    n = count < (isize - 16) / 784 ? count : (isize - 16) / 784;

  static lenet5_state model; /* size fixed at compile time */
  char err[256];
  if (lenet5_load(&model, weights, (size_t)wsize, err, sizeof err) != 0) {
    fprintf(stderr, "classify: %s: %s\n", argv[1], err);
    return 1;
  }
  int right = 0;
  for (long i = 0; i < n; i++) {
    float x[LENET5_X_SIZE], logits[LENET5_LOGITS_SIZE];
    for (int k = 0; k < LENET5_X_SIZE; k++) /* as cnnc train: [-1, 1] */
      x[k] = images[16 + i * 784 + k] / 127.5f - 1.0f;
    lenet5_forward(&model, 1, x, logits);
    int best = 0;
    for (int k = 1; k < LENET5_LOGITS_SIZE; k++)
      if (logits[k] > logits[best])
        best = k;
    int truth = labels[8 + i];
    right += best == truth;
    printf("image %ld: %-12s (it is a %s)%s\n", i, classes[best],
           classes[truth], best == truth ? "" : "  <- wrong");
  }
  printf("%d of %ld right\n", right, n);
  free(weights);
  free(images);
  free(labels);
  return 0;
}
