/* A control-plane binary that is broken on purpose: it starts, says so and exits 1, as a
 * release whose binary cannot run on the node would. The upgrade suite rolls out an image with
 * it under the component's name and expects the upgrade to be caught and rolled back. */
#include <stdio.h>

int main(int argc, char **argv) {
  (void)argc;
  fprintf(stderr, "%s: this image is broken on purpose (kubectl-selfhost test): exiting 1\n", argv[0]);
  return 1;
}
