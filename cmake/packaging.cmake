# `cpack` in a build folder makes the Debian package: /usr/bin/ernie, the demo model in /usr/share/ernie/demo (found
# by the installed binary beside itself), the systemd unit and its /etc/default file, and the man page. The
# architecture is the target's, so a cross build (scripts/cross.sh aarch64) packages arm64.
install(TARGETS ernie RUNTIME DESTINATION bin)
install(DIRECTORY ${CMAKE_SOURCE_DIR}/models/demo/ DESTINATION share/ernie/demo)
# Its quatrain adapter, to try --lora with: ernie run --chat --prompt ... --lora /usr/share/ernie/demo-quatrain-lora
install(DIRECTORY ${CMAKE_SOURCE_DIR}/models/demo-quatrain-lora/ DESTINATION share/ernie/demo-quatrain-lora)
# /usr/lib/systemd/system: Debian 12's /lib is a link to /usr/lib, and systemd reads both.
install(FILES ${CMAKE_SOURCE_DIR}/deploy/systemd/ernie-serve.service DESTINATION lib/systemd/system)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/systemd/ernie-serve.default DESTINATION /etc/default RENAME ernie-serve)
install(FILES ${CMAKE_SOURCE_DIR}/deploy/man/ernie.1 DESTINATION share/man/man1)

if(CMAKE_SYSTEM_PROCESSOR STREQUAL "aarch64")
  set(ERNIE_DEB_ARCH arm64)
elseif(CMAKE_SYSTEM_PROCESSOR STREQUAL "riscv64")
  set(ERNIE_DEB_ARCH riscv64)
else()
  set(ERNIE_DEB_ARCH amd64)
endif()

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ernie-edge)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_CONTACT "ernie-edge maintainers <ernie-edge@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "CPU inference engine and HTTP server for the ERNIE-4.5-0.3B language model")
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "Runs Baidu's ERNIE-4.5-0.3B from its Hugging Face checkpoint or GGUF file on ordinary CPUs\n"
    " (SIMD kernels with runtime dispatch; F32, BF16, F16, INT8 and INT4 weights), with an\n"
    " OpenAI-compatible HTTP server (ernie-serve.service) and a small built-in demo model.")
set(CPACK_DEBIAN_PACKAGE_ARCHITECTURE ${ERNIE_DEB_ARCH})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # ernie-edge_VERSION_ARCH.deb
set(CPACK_DEBIAN_PACKAGE_SECTION science)
# Named by hand: dpkg-shlibdeps cannot see a cross build's private sentencepiece copy (scripts/cross.sh). These are
# the Debian 12 packages of the shared libraries `ernie` links (libstdc++/libgcc/libc come with them).
set(CPACK_DEBIAN_PACKAGE_DEPENDS "libc6 (>= 2.36), libstdc++6 (>= 12), libhwy1 (>= 1.0.3), libsentencepiece0, libcpp-httplib0.11, libre2-9")
# The defaults file is the administrator's: kept across upgrades, never overwritten.
file(WRITE ${CMAKE_BINARY_DIR}/deb-control/conffiles "/etc/default/ernie-serve\n")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${CMAKE_BINARY_DIR}/deb-control/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
include(CPack)
