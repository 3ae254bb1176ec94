# tcpwhy_bpf_skeleton(<target> <source.bpf.c>)
#
# Builds <source.bpf.c> with clang for the BPF target against the committed
# vmlinux.h of the target architecture (never the build machine's kernel), then
# has bpftool generate a skeleton header. <target> is an INTERFACE library whose
# include directory holds <name>.skel.h, so linking it embeds the object in the
# binary that includes the skeleton.
find_program(BPF_CLANG NAMES clang clang-16 clang-15 clang-14 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)

if(CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|amd64|AMD64")
  set(TCPWHY_BPF_ARCH x86)
elseif(CMAKE_SYSTEM_PROCESSOR MATCHES "aarch64|arm64")
  set(TCPWHY_BPF_ARCH arm64)
else()
  message(FATAL_ERROR "tcpwhy: no committed vmlinux.h for ${CMAKE_SYSTEM_PROCESSOR}; see docs/building.md")
endif()

function(tcpwhy_bpf_skeleton target source)
  get_filename_component(name ${source} NAME_WE)
  set(out_dir ${CMAKE_CURRENT_BINARY_DIR}/${target})
  set(obj ${out_dir}/${name}.bpf.o)
  set(skel ${out_dir}/${name}.skel.h)
  set(vmlinux_dir ${PROJECT_SOURCE_DIR}/bpf/vmlinux/${TCPWHY_BPF_ARCH})
  if(NOT EXISTS ${vmlinux_dir}/vmlinux.h)
    message(FATAL_ERROR "tcpwhy: ${vmlinux_dir}/vmlinux.h missing; see docs/building.md")
  endif()
  file(GLOB bpf_headers ${PROJECT_SOURCE_DIR}/bpf/*.h ${PROJECT_SOURCE_DIR}/bpf/lib/*.h
       ${PROJECT_SOURCE_DIR}/include/tcpwhy/abi.h)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${out_dir}
    COMMAND ${BPF_CLANG} -target bpf -g -O2 -Wall -Werror -D__TARGET_ARCH_${TCPWHY_BPF_ARCH}
            -I${vmlinux_dir} -I${PROJECT_SOURCE_DIR}/include -I${PROJECT_SOURCE_DIR}/bpf
            -c ${CMAKE_CURRENT_SOURCE_DIR}/${source} -o ${obj}
    DEPENDS ${source} ${bpf_headers}
    COMMENT "BPF ${source}"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${name}_bpf > ${skel}
    DEPENDS ${obj}
    COMMENT "skeleton ${name}.skel.h"
    VERBATIM)
  add_custom_target(${target}_gen DEPENDS ${skel})
  add_library(${target} INTERFACE)
  target_include_directories(${target} INTERFACE ${out_dir})
  add_dependencies(${target} ${target}_gen)
endfunction()
