# Checks that clang-format (with the tree's .clang-format) would change no C++ file.
#   cmake -DROOT=<tree> -DCLANG_FORMAT=<clang-format> [-DFOLDERS="core;data"] -P check_format.cmake
# Fails with the files it would change; prints "SKIPPED: ..." (a skip for ctest) when the
# clang-format found is not the version the layout was written with, since versions lay out some
# constructs differently.
if(NOT DEFINED ROOT OR NOT DEFINED CLANG_FORMAT)
  message(FATAL_ERROR "pass -DROOT=<source tree> -DCLANG_FORMAT=<clang-format>")
endif()
set(required_major 14)
if(NOT DEFINED FOLDERS)
  set(FOLDERS core data dist teacher student eval tools tests bench)
endif()

if(NOT EXISTS "${CLANG_FORMAT}")
  message("SKIPPED: clang-format not found: install Debian's clang-format (${required_major})")
  return()
endif()
execute_process(COMMAND ${CLANG_FORMAT} --version OUTPUT_VARIABLE version)
if(NOT version MATCHES "version ${required_major}\\.")
  message("SKIPPED: ${CLANG_FORMAT} is not clang-format ${required_major}: ${version}")
  return()
endif()

set(files "")
foreach(folder ${FOLDERS})
  file(GLOB_RECURSE found RELATIVE ${ROOT} ${ROOT}/${folder}/*.h ${ROOT}/${folder}/*.cpp ${ROOT}/${folder}/*.cu)
  list(APPEND files ${found})
endforeach()
# Trees that exist to be wrong.
list(FILTER files EXCLUDE REGEX "^tests/(layering|format)/")
list(SORT files)

set(unformatted "")
foreach(source ${files})
  execute_process(COMMAND ${CLANG_FORMAT} --dry-run --Werror ${source} WORKING_DIRECTORY ${ROOT}
                  RESULT_VARIABLE rc OUTPUT_QUIET ERROR_QUIET)
  if(NOT rc EQUAL 0)
    string(APPEND unformatted "  ${source}\n")
  endif()
endforeach()
list(LENGTH files checked)
if(unformatted)
  message("clang-format would change these files (run clang-format -i on them):\n${unformatted}")
  message(FATAL_ERROR "unformatted files above")
endif()
message(STATUS "format ok: ${checked} files checked")
