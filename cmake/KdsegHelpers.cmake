# kdseg_add_library(<name> SOURCES ... [PUBLIC_DEPS ...] [PRIVATE_DEPS ...])
# One library per folder: kdseg_<name>, alias kdseg::<name>, includes rooted at the repository.

set(KDSEG_WARNINGS -Wall -Wextra -Wpedantic -Wno-unused-parameter)
set(KDSEG_PCH_HEADER ${CMAKE_SOURCE_DIR}/core/pch.h)

# All LibTorch-using targets share one precompiled header, built once.
function(kdseg_use_pch target)
  if(NOT KDSEG_PRECOMPILED_HEADERS)
    return()
  endif()
  if(TARGET kdseg_pch)
    get_target_property(type ${target} TYPE)
    if(type STREQUAL "EXECUTABLE")
      # The header is compiled -fPIC (for the libraries); GCC only reuses it with the same setting.
      set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE OFF)
      target_compile_options(${target} PRIVATE -fPIC)
    endif()
    target_compile_options(${target} PRIVATE -Winvalid-pch)
    target_precompile_headers(${target} REUSE_FROM kdseg_pch)
  else()
    message(FATAL_ERROR "kdseg_pch must be defined before ${target}")
  endif()
endfunction()

function(kdseg_add_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;PUBLIC_DEPS;PRIVATE_DEPS" ${ARGN})
  set(target kdseg_${name})
  if(ARG_SOURCES)
    add_library(${target} ${ARG_SOURCES})
    set(scope PUBLIC)
    target_compile_options(${target} PRIVATE ${KDSEG_WARNINGS})
    target_link_libraries(${target} PRIVATE ${ARG_PRIVATE_DEPS})
    kdseg_use_pch(${target})
  else()
    # A folder whose code is all in headers so far.
    add_library(${target} INTERFACE)
    set(scope INTERFACE)
  endif()
  add_library(kdseg::${name} ALIAS ${target})
  set_target_properties(${target} PROPERTIES EXPORT_NAME ${name})
  target_include_directories(${target} ${scope}
    $<BUILD_INTERFACE:${CMAKE_SOURCE_DIR}>
    $<BUILD_INTERFACE:${CMAKE_BINARY_DIR}/generated>
    $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}/kdseg>)
  target_link_libraries(${target} ${scope} ${ARG_PUBLIC_DEPS})
endfunction()
