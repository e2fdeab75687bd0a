// The HDF5 status check: a failing call is an error naming the call and HDF5's reason.
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "data/check_hdf5.h"

namespace {

TEST(CheckHdf5, FailureCarriesCallAndHdf5Reason) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  try {
    KDSEG_CHECK_HDF5(H5Fopen("/nonexistent/prepared.h5", H5F_ACC_RDONLY, H5P_DEFAULT));
    FAIL() << "KDSEG_CHECK_HDF5 did not throw";
  } catch (const kdseg::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("H5Fopen(\"/nonexistent/prepared.h5\""), std::string::npos) << what;
    EXPECT_NE(what.find("unable to open file"), std::string::npos) << what;
  }
}

TEST(CheckHdf5, SuccessYieldsTheValue) {
  const hid_t space = KDSEG_CHECK_HDF5(H5Screate(H5S_SCALAR));
  EXPECT_GE(space, 0);
  KDSEG_CHECK_HDF5(H5Sclose(space));
}

}  // namespace
